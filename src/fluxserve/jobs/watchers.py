"""One watcher of a job's events: a bounded queue between a publishing thread and an event loop.

A worker thread offers events; the watcher's event loop takes them. Neither waits for the other.
At most ``limit`` events wait: a watcher that falls further behind (its client stopped reading)
is dropped at once, its waiting events released, and :meth:`Watcher.next` raises
:class:`FellBehind` from then on. The publisher is never blocked, and other watchers of the
same job are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable

from fluxserve.jobs.models import JobEvent

EventFilter = Callable[[JobEvent], bool]


def every_event(event: JobEvent) -> bool:
    return True


def terminal_only(event: JobEvent) -> bool:
    return event.terminal


class FellBehind(Exception):
    """The watcher was dropped: more than its limit of events waited for it."""


class Watcher:
    """The events of one job for one watcher, in order. Make it on the event loop that reads it."""

    def __init__(self, limit: int, wanted: EventFilter = every_event) -> None:
        self.limit = limit
        self._wanted = wanted
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._lock = threading.Lock()
        self._pending: deque[JobEvent] = deque()
        self._fell_behind = False

    @property
    def pending(self) -> int:
        """How many events wait to be read."""
        with self._lock:
            return len(self._pending)

    @property
    def fell_behind(self) -> bool:
        with self._lock:
            return self._fell_behind

    def offer(self, event: JobEvent) -> bool:
        """Queue ``event`` (from any thread); False once the watcher has fallen behind."""
        if not self._wanted(event):
            return True
        with self._lock:
            if self._fell_behind:
                return False
            self._fell_behind = len(self._pending) >= self.limit
            if self._fell_behind:
                self._pending.clear()  # released now, not when the reader gets round to it
            else:
                self._pending.append(event)
                if len(self._pending) > 1:
                    return True  # the reader was woken for the first one and has not taken it yet
            kept = not self._fell_behind
        with contextlib.suppress(RuntimeError):  # that loop has closed; its reader is gone
            self._loop.call_soon_threadsafe(self._ready.set)
        return kept

    async def next(self, timeout: float | None = None) -> JobEvent | None:
        """The next event; None when ``timeout`` seconds pass without one. :class:`FellBehind` once dropped."""
        while True:
            with self._lock:
                if self._fell_behind:
                    raise FellBehind
                if self._pending:
                    return self._pending.popleft()
                self._ready.clear()  # under the lock: an event offered after this wakes the reader
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
