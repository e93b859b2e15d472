"""Calls to a hosted provider: a timeout on every call, and retries only where they cannot bill twice.

A *create* (the request that starts paid work) is retried only when it cannot have reached the
provider (the connection was refused or never made) or when the provider said 429 with a
``Retry-After``. Never after a 5xx or a read timeout: the work may have started, and a second
create would be billed again. A *poll* or a *download* changes nothing, so it is retried with
backoff on any transient failure.
"""

from __future__ import annotations

import email.utils
import threading
import time

import httpx

from fluxserve.errors import GenerationCancelled, ProviderError
from fluxserve.numbers import ascii_int

CREATE_ATTEMPTS = 3
POLL_ATTEMPTS = 5
LONGEST_RETRY_AFTER = 60.0
"""A 429 asking to wait longer than this is not waited for: the job fails and says when to retry."""


def pause(seconds: float, cancel: threading.Event | None, provider: str) -> None:
    """Sleep, unless the job is canceled meanwhile."""
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise GenerationCancelled(
            f"the job was canceled while waiting for {provider}; {provider} may still finish and bill the work"
        )


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` header asks for (a number or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    seconds = ascii_int(value)
    if seconds is not None:
        return float(seconds)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def create(
    client: httpx.Client, request: httpx.Request, *, provider: str, cancel: threading.Event | None = None
) -> httpx.Response:
    """Send a request that starts paid work; the response may be any status (the caller maps it)."""
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        last = attempt == CREATE_ATTEMPTS
        try:
            response = client.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout):  # nothing reached the provider
            if last:
                raise ProviderError(
                    f"cannot connect to {provider}; check the server's network and the provider's base URL",
                    provider=provider,
                    provider_code="connect_failed",
                ) from None
            pause(0.5 * 2 ** (attempt - 1), cancel, provider)
            continue
        except httpx.TimeoutException:
            raise ProviderError(
                f"{provider} did not answer in time; not retried, since it may have started (and billed) the work",
                provider=provider,
                provider_code="timeout",
            ) from None
        except httpx.TransportError:
            raise ProviderError(
                f"the connection to {provider} failed after the request was sent; not retried, since it may "
                "have started (and billed) the work",
                provider=provider,
                provider_code="connection_lost",
            ) from None
        wait = retry_after(response) if response.status_code == 429 else None
        if wait is None or last or wait > LONGEST_RETRY_AFTER:
            return response
        response.close()
        pause(wait, cancel, provider)
    raise AssertionError("unreachable")


def fetch(
    client: httpx.Client,
    request: httpx.Request,
    *,
    provider: str,
    cancel: threading.Event | None = None,
    attempts: int = POLL_ATTEMPTS,
) -> httpx.Response:
    """Send a request that changes nothing (a poll, a download), retrying transient failures.

    Returns the first response that is not a 429 or a 5xx, or the last one.
    """
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        try:
            response = client.send(request)
        except httpx.TransportError as error:
            if last:
                raise ProviderError(
                    f"cannot reach {provider} ({type(error).__name__}) after {attempts} tries",
                    provider=provider,
                    provider_code="unreachable",
                ) from None
            pause(min(10.0, 0.5 * 2 ** (attempt - 1)), cancel, provider)
            continue
        if (response.status_code == 429 or response.status_code >= 500) and not last:
            wait = retry_after(response)
            response.close()
            pause(min(LONGEST_RETRY_AFTER, wait if wait is not None else 0.5 * 2 ** (attempt - 1)), cancel, provider)
            continue
        return response
    raise AssertionError("unreachable")
