"""What follows an attempt: delivered, retried after an exponential backoff, or failed for good."""

from __future__ import annotations

from dataclasses import dataclass

from fluxserve.jobs.models import DeliveryStatus
from fluxserve.settings import Settings
from fluxserve.webhooks.attempts import Attempt


@dataclass(frozen=True)
class Step:
    """What to record after an attempt."""

    status: DeliveryStatus
    next_attempt_at: float | None
    error: str | None


def next_step(attempt: Attempt, number: int, settings: Settings, now: float) -> Step:
    """Decide after attempt ``number``: 2xx is done, 429/5xx/no answer retry with backoff, the rest fail now.

    Redirects are not followed: a receiver that moved should be given its new URL, and following
    would let a webhook URL bounce the signed body somewhere the client never named.
    """
    code = attempt.status_code
    if code is not None and 200 <= code < 300:
        return Step(DeliveryStatus.DELIVERED, None, None)
    error = attempt.error or f"HTTP {code}"
    if code is not None and 300 <= code < 400:
        error += " (redirects are not followed)"
    retryable = (code is None and not attempt.permanent) or code == 429 or (code is not None and 500 <= code < 600)
    if not retryable or number >= settings.webhook_max_attempts:
        return Step(DeliveryStatus.FAILED, None, error)
    delay = settings.webhook_retry_base_seconds * 2 ** (number - 1)
    if attempt.retry_after is not None and code in (429, 503):
        delay = attempt.retry_after
    return Step(DeliveryStatus.PENDING, now + min(delay, settings.webhook_retry_max_seconds), error)
