"""Job events from worker threads to asyncio watchers, with a short memory for reconnections.

Workers publish from their own threads; each watcher owns an ``asyncio.Queue`` on its event
loop, fed through ``call_soon_threadsafe``. Publishing never blocks a worker.

Every event gets an id ``"<boot>-<sequence>"``: the boot number counts server starts (kept in
the job store), the sequence counts events within this process. The bus remembers the recent
events of each job, so a client that reconnects with ``Last-Event-ID`` gets what it missed;
when the id is from an earlier process or too old, :meth:`EventBus.since` says so and the
caller describes the job's current state instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from fluxserve.jobs.models import JobEvent
from fluxserve.numbers import ascii_int

Listener = Callable[[JobEvent], None]

EVENTS_PER_JOB = 512
"""How many recent events of one job are kept for reconnections."""
JOBS_REMEMBERED = 2048
"""How many jobs' events are kept; the oldest job is forgotten first."""


class EventBus:
    def __init__(self, boot: int = 0) -> None:
        self.boot = boot
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._watchers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[JobEvent]]]] = {}
        self._history: OrderedDict[str, deque[JobEvent]] = OrderedDict()
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` with every event, on the publishing thread; it must not block."""
        self._listeners.append(listener)

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

    def watched(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._watchers

    def publish(self, event: JobEvent) -> JobEvent:
        """Number the event, remember it, and hand it to every watcher and listener."""
        with self._lock:
            event = replace(event, id=f"{self.boot}-{next(self._sequence)}")
            self._remember(event)
            watchers = list(self._watchers.get(event.job_id, ()))
        for loop, queue in watchers:
            with contextlib.suppress(RuntimeError):  # that loop has closed; its watcher is gone
                loop.call_soon_threadsafe(queue.put_nowait, event)
        for listener in self._listeners:
            listener(event)
        return event

    def _remember(self, event: JobEvent) -> None:
        history = self._history.get(event.job_id)
        if history is None:
            history = self._history[event.job_id] = deque(maxlen=EVENTS_PER_JOB)
            while len(self._history) > JOBS_REMEMBERED:
                self._history.popitem(last=False)
        history.append(event)

    def since(self, job_id: str, last_event_id: str) -> list[JobEvent] | None:
        """The events of ``job_id`` after ``last_event_id``.

        None when they cannot be known: the id is from another process, or older than what is kept.
        """
        with self._lock:
            kept = list(self._history.get(job_id, ()))
        sequence = self.sequence_of(last_event_id)
        if sequence is None:
            return None
        if len(kept) == EVENTS_PER_JOB and sequence < _number(kept[0]):
            return None  # some events after it were forgotten
        return [event for event in kept if _number(event) > sequence]

    def latest(self, job_id: str, kind: str) -> JobEvent | None:
        """The most recent kept event of ``kind`` for ``job_id``."""
        with self._lock:
            kept = list(self._history.get(job_id, ()))
        return next((event for event in reversed(kept) if event.type == kind), None)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._history.pop(job_id, None)

    def sequence_of(self, event_id: str) -> int | None:
        """The sequence number of an id given out by this process; None for any other id."""
        boot, _, sequence = event_id.partition("-")
        return ascii_int(sequence) if boot == str(self.boot) else None


def _number(event: JobEvent) -> int:
    """The sequence number of an event this bus published."""
    return int(event.id.partition("-")[2])
