"""One POST of a delivery and what came of it: a status code, or the reason none came."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from fluxserve.webhooks.client import ForbiddenAddress

MAX_REASON = 200
"""The longest reason kept in a delivery record."""


@dataclass(frozen=True)
class Attempt:
    """The outcome of one POST: a status code, or the reason none came."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False
    """A failure that retrying cannot fix (a URL httpx cannot send to)."""


def retry_after_seconds(value: str | None) -> float | None:
    """A numeric ``Retry-After``; an HTTP date or nonsense is ignored (plain backoff applies)."""
    if value is None or not (value.strip().isascii() and value.strip().isdigit()):
        return None
    return float(value.strip())


def failure_reason(error: httpx.TransportError, timeout: float) -> str:
    """A short reason for an attempt that got no answer, for people reading the delivery record."""
    if isinstance(error, httpx.TimeoutException):
        return f"timed out after {timeout:g} s"
    causes: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, ConnectionRefusedError) or "connection refused" in str(c).lower() for c in causes):
        return "connection refused"
    if isinstance(error, httpx.ConnectError):
        return f"could not connect: {error}"[:MAX_REASON]
    return f"{type(error).__name__}: {error}"[:MAX_REASON]


def post(client: httpx.Client, url: str, headers: dict[str, str], body: str, timeout: float) -> Attempt:
    """POST once with a :func:`~fluxserve.webhooks.client.webhook_client`; the receiver's body is never read,
    so a huge answer costs nothing.

    A host that is or resolves to a forbidden address fails for good; one that does not resolve is retried.
    """
    try:
        with client.stream("POST", url, content=body.encode(), headers=headers) as response:
            return Attempt(response.status_code, retry_after=retry_after_seconds(response.headers.get("retry-after")))
    except ForbiddenAddress as error:
        return Attempt(error=str(error)[:MAX_REASON], permanent=True)
    except httpx.UnsupportedProtocol as error:
        return Attempt(error=f"cannot send to this URL: {error}"[:MAX_REASON], permanent=True)
    except httpx.TransportError as error:
        return Attempt(error=failure_reason(error, timeout))
    except httpx.InvalidURL as error:
        return Attempt(error=f"invalid URL: {error}"[:MAX_REASON], permanent=True)
