"""Which webhook URLs a request may name: absolute http(s), with a host that is not a forbidden address.

Checked when the request comes in; the address a host name resolves to is checked again at each
delivery (see :mod:`fluxserve.webhooks.client`).
"""

from __future__ import annotations

import httpx

from fluxserve.errors import InvalidRequest
from fluxserve.webhooks.addresses import forbidden, literal

MAX_URL_LENGTH = 2048


def check_webhook_url(url: str) -> str:
    """Accept only absolute http(s) URLs with a host: the sender must never open files or run other schemes."""
    how = "send webhook_url as an absolute http:// or https:// URL with a host, such as https://example.com/hooks/jobs"
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"webhook_url is longer than {MAX_URL_LENGTH} characters; {how}", param="webhook_url")
    if any(character.isspace() or not character.isprintable() for character in url):
        raise InvalidRequest(f"webhook_url contains spaces or control characters; {how}", param="webhook_url")
    try:
        parsed = httpx.URL(url)  # what the sender will send to, so the same parser judges it
        _ = parsed.host, parsed.port  # an IDNA label that does not decode fails only when read
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise InvalidRequest(f"webhook_url is not a valid URL; {how}", param="webhook_url") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidRequest(
            f"webhook_url scheme {parsed.scheme or '(none)'!r} is not allowed; {how}", param="webhook_url"
        )
    if not parsed.host:
        raise InvalidRequest(f"webhook_url has no host; {how}", param="webhook_url")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise InvalidRequest(f"webhook_url port {parsed.port} is out of range; {how}", param="webhook_url")
    address = literal(parsed.host)
    if address is not None and forbidden(address):
        raise InvalidRequest(
            f"webhook_url points at {address}, a link-local, metadata, unspecified or multicast address, "
            "which this server never posts to; use the receiver's own address",
            param="webhook_url",
        )
    return url
