"""The webhook signing secret: ``whsec_`` + base64 of random bytes, configured or kept in the data dir."""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from fluxserve.errors import InvalidRequest
from fluxserve.storage.folder import write_atomically

SECRET_PREFIX = "whsec_"
SECRET_FILE = "webhook-secret"
SECRET_BYTES = 32
"""The spec asks for 24 to 64 random bytes."""
MIN_SECRET_BYTES = 24


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; refuse anything else so a typo cannot sign with a weak key."""
    how = (
        "the webhook secret must be 'whsec_' followed by the base64 of at least 24 random bytes "
        "('whsec_' + base64 of secrets.token_bytes(32) will do), or leave webhook_secret unset "
        "to have the server make one and keep it in the data dir"
    )
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidRequest(how, param="webhook_secret")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(how, param="webhook_secret") from None
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidRequest(how, param="webhook_secret")
    return key


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def load_or_create_secret(data_dir: Path, configured: str | None) -> str:
    """The configured secret, else the one kept in the data dir, made on first use.

    Kept on disk so receivers configured with it keep verifying deliveries after a restart.
    """
    if configured is not None:
        secret_key(configured)
        return configured
    path = data_dir / SECRET_FILE
    if path.exists():
        secret = path.read_text(encoding="ascii", errors="replace").strip()
        try:
            secret_key(secret)
        except InvalidRequest:
            raise InvalidRequest(
                f"{path} does not hold a webhook secret ('whsec_' + base64); fix it, or delete it to make a new "
                "one (receivers then need the new secret)",
                param="webhook_secret",
            ) from None
        return secret
    secret = new_secret()
    write_atomically(path, (secret + "\n").encode("ascii"))
    path.chmod(0o600)
    return secret
