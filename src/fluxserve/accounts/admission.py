"""Whether a key may queue one more job now: its rate, its concurrency and its quota.

The job service asks under its admission lock, so that checking and queueing are one step and
concurrent requests cannot slip past a limit together. A request counts toward the key's rate
once it has passed every check that needs no decoding (the job service records it then), so one
that makes the server decode images and is then refused has still used a request; nothing else
is counted for a refusal.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fluxserve.accounts.keys import ApiKey
from fluxserve.accounts.periods import iso, period_bounds
from fluxserve.accounts.ratelimit import RateLimiter
from fluxserve.accounts.usage import megapixels_since
from fluxserve.db import Database
from fluxserve.errors import ErrorCode, QuotaExceeded, RateLimited


class Admission:
    def __init__(
        self, store: Database, unfinished: Callable[[str], int], clock: Callable[[], float] = time.time
    ) -> None:
        """``unfinished(key_id)``: how many of the key's jobs are queued or running (the job store knows)."""
        self._store = store
        self._unfinished = unfinished
        self._clock = clock
        self._rate = RateLimiter()

    def now(self) -> float:
        return self._clock()

    def check(self, key: ApiKey, megapixels: float, now: float, *, busy_retry_after: int, rate: bool = True) -> None:
        """Raise RateLimited or QuotaExceeded if ``key`` may not queue a job of ``megapixels`` now.

        ``busy_retry_after`` is the caller's guess of when one of the key's jobs will have finished;
        ``rate=False`` skips the rate, for a request that has claimed its place already.
        """
        limits = key.limits
        if rate:
            self._check_rate(key, now)
        if limits.concurrency is not None:
            unfinished = self._unfinished(key.id)
            if unfinished >= limits.concurrency:
                raise RateLimited(
                    f"this key has {unfinished} jobs queued or running, its limit; try again when one has finished",
                    retry_after=busy_retry_after,
                    code=ErrorCode.CONCURRENCY_LIMIT_EXCEEDED,
                )
        if limits.quota_megapixels is not None and limits.quota_period is not None:
            start, reset = period_bounds(limits.quota_period, now)
            used = megapixels_since(self._store, key.id, start)
            quota = limits.quota_megapixels
            if used + megapixels > quota + 1e-9:
                left = max(0.0, quota - used)
                raise QuotaExceeded(
                    f"this request needs {megapixels:g} megapixels and the key has {left:.4g} of its "
                    f"{quota:g} per {limits.quota_period.value} left; the quota resets at {iso(reset)}",
                    reset_at=int(reset),
                    retry_after=max(1, int(reset - now + 0.999)),
                )

    def _check_rate(self, key: ApiKey, now: float) -> None:
        rpm = key.limits.rpm
        if rpm is not None:
            wait = self._rate.wait_needed(key.id, rpm, now)
            if wait:
                raise RateLimited(f"this key may make {rpm} requests a minute; try again in {wait} s", retry_after=wait)

    def record(self, key: ApiKey, now: float) -> None:
        """Count a request against the key's rate (call under the admission lock, right after check())."""
        if key.limits.rpm is not None:
            self._rate.record(key.id, now)
