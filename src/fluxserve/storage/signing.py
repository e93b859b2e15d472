"""Signed, expiring image URLs: they open in a browser or an ``<img>`` without an API key.

A URL carries ``expires`` (Unix seconds) and ``signature``, an HMAC-SHA256 of its path and
expiry under a key only the server knows; changing either breaks the signature. ``expires`` is
rounded up to a multiple of :data:`ROUNDING_SECONDS`, so the same image gets the same URL for a
while and browsers can cache it: a URL works for at least ``ttl`` seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from fluxserve.errors import ErrorCode, InvalidRequest, PermissionDenied
from fluxserve.numbers import ascii_int
from fluxserve.storage.folder import write_atomically

KEY_FILE = "url-signing-key"
ROUNDING_SECONDS = 300
MIN_SECRET_LENGTH = 32
MAX_EXPIRES_DIGITS = 12
"""Unix seconds until the year 33658: a longer ``expires`` is not one this server signed."""


class UrlSigner:
    def __init__(self, key: bytes, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._ttl = ttl_seconds
        self._clock = clock

    def _signature(self, path: str, expires: int) -> str:
        digest = hmac.new(self._key, f"{path}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def sign(self, path: str) -> str:
        """``path`` with the query that lets anyone holding it fetch it until it expires."""
        expires = (int(self._clock()) + self._ttl + ROUNDING_SECONDS - 1) // ROUNDING_SECONDS * ROUNDING_SECONDS
        return f"{path}?expires={expires}&signature={self._signature(path, expires)}"

    def verify(self, path: str, expires: str | None, signature: str | None) -> None:
        """Return if the signature is this server's for ``path`` and has not expired; else PermissionDenied."""
        if expires is None or signature is None:
            raise PermissionDenied(
                "this image URL is not signed; use the url from the job or the images response",
                code=ErrorCode.INVALID_SIGNATURE,
            )
        expiry = ascii_int(expires) if len(expires) <= MAX_EXPIRES_DIGITS else None
        expected = "" if expiry is None else self._signature(path, expiry)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")) or expiry is None:
            raise PermissionDenied(
                "this image URL's signature is not valid; use the url from the job as it came",
                code=ErrorCode.INVALID_SIGNATURE,
            )
        if expiry <= self._clock():
            raise PermissionDenied(
                "this image URL has expired; GET the job again for fresh URLs", code=ErrorCode.URL_EXPIRED
            )


def load_or_create_signing_key(data_dir: Path, configured: str | None) -> bytes:
    """The configured secret, else the one kept in the data dir (made on first use, readable by the owner only).

    Kept on disk so that URLs given out before a restart keep working after it.
    """
    if configured is not None:
        if len(configured) < MIN_SECRET_LENGTH:
            raise InvalidRequest(
                f"url_signing_secret must be at least {MIN_SECRET_LENGTH} characters", param="url_signing_secret"
            )
        return configured.encode("utf-8")
    path = data_dir / KEY_FILE
    if path.exists():
        secret = path.read_text(encoding="ascii", errors="replace").strip()
        if len(secret) < MIN_SECRET_LENGTH:
            raise InvalidRequest(
                f"{path} holds no signing key; delete it to make a new one", param="url_signing_secret"
            )
        return secret.encode("ascii")
    secret = secrets.token_hex(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (secret + "\n").encode("ascii"))
    path.chmod(0o600)
    return secret.encode("ascii")
