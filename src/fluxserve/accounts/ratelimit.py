"""Requests per minute per key: a sliding window over the last 60 seconds of accepted requests."""

from __future__ import annotations

import math
import threading
from collections import deque

WINDOW_SECONDS = 60.0


class RateLimiter:
    """Counts what was accepted, not what was asked: a refused request uses nothing up.

    Kept in memory, per process: a restart forgets the last minute.
    """

    def __init__(self) -> None:
        self._accepted: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_needed(self, key_id: str, per_minute: int, now: float) -> int:
        """0 when ``key_id`` may make a request now, else the whole seconds until it may."""
        with self._lock:
            times = self._accepted.get(key_id)
            if times is None:
                return 0
            while times and times[0] <= now - WINDOW_SECONDS:
                times.popleft()
            if len(times) < per_minute:
                return 0
            return max(1, math.ceil(times[-per_minute] + WINDOW_SECONDS - now))

    def record(self, key_id: str, now: float) -> None:
        with self._lock:
            self._accepted.setdefault(key_id, deque()).append(now)
