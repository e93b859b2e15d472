"""The signed headers of one attempt: Standard Webhooks v1, HMAC-SHA256 over ``id.timestamp.body``."""

from __future__ import annotations

import base64
import hashlib
import hmac

USER_AGENT = "fluxserve-webhooks"


def sign(key: bytes, delivery_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value: v1 is HMAC-SHA256 over ``id.timestamp.body``, base64."""
    digest = hmac.new(key, f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(key: bytes, delivery_id: str, body: str, now: float) -> dict[str, str]:
    """Headers for one attempt; the timestamp is the attempt's, so receivers' replay windows accept retries."""
    timestamp = int(now)
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, delivery_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def bfl_signature(secret: str, body: str) -> str:
    """BFL's ``X-BFL-Signature`` (its webhook guide): ``sha256=`` + hex HMAC-SHA256 of the body, keyed
    with the client's ``webhook_secret`` as UTF-8."""
    return "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
