"""Job events from worker threads to asyncio watchers.

Workers publish from their own threads; each watcher owns an ``asyncio.Queue`` on its event
loop, fed through ``call_soon_threadsafe``. Publishing never blocks a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fluxserve.jobs.models import JobEvent


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[JobEvent]]]] = {}

    @contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Queue[JobEvent]]:
        """Receive the events of ``job_id`` published while the block runs (call on an event loop)."""
        entry = (asyncio.get_running_loop(), asyncio.Queue[JobEvent]())
        with self._lock:
            self._watchers.setdefault(job_id, []).append(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                watchers = self._watchers.get(job_id, [])
                watchers.remove(entry)
                if not watchers:
                    self._watchers.pop(job_id, None)

    def publish(self, event: JobEvent) -> None:
        with self._lock:
            watchers = list(self._watchers.get(event.job_id, ()))
        for loop, queue in watchers:
            with contextlib.suppress(RuntimeError):  # that loop has closed; its watcher is gone
                loop.call_soon_threadsafe(queue.put_nowait, event)
