"""Job events from worker threads to asyncio watchers, with a short memory for reconnections.

Workers publish from their own threads; each watcher is a bounded :class:`Watcher` read on its
event loop. Publishing never blocks a worker: a watcher that falls more than ``max_pending``
events behind is dropped (see :mod:`fluxserve.jobs.watchers`), and its client can reconnect.

Every event gets an id ``"<boot>-<sequence>"``: the boot number counts server starts (kept in
the job store), the sequence counts events within this process. The bus remembers the recent
events of each job, so a client that reconnects with ``Last-Event-ID`` gets what it missed;
when the id is from an earlier process or too old, :meth:`EventBus.since` says so and the
caller describes the job's current state instead.

What is kept is bounded in count (:data:`EVENTS_PER_JOB` x :data:`JOBS_REMEMBERED`) and in
images: partial images are never kept (only live streams send them), and of a job's previews
only the latest is kept, until the job ends.

Where several processes share a Postgres database, the bus is handed a :class:`Relay`
(:mod:`fluxserve.jobs.relay`): what is published goes through the database's events table to the
bus of every process, this one included, numbered by the table; ids are then ``"<sequence>"``,
the same everywhere, and :meth:`EventBus.since` reads the table.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Protocol

from fluxserve.jobs.models import JobEvent, JobEventType
from fluxserve.jobs.watchers import EventFilter, Watcher, every_event
from fluxserve.numbers import ascii_int

log = logging.getLogger("fluxserve.jobs")

Listener = Callable[[JobEvent], None]

EVENTS_PER_JOB = 512
"""How many recent events of one job are kept for reconnections."""
JOBS_REMEMBERED = 2048
"""How many jobs' events are kept; the oldest job is forgotten first."""
MAX_PENDING = 64
"""How many events may wait for one watcher before it is dropped (``sse_max_pending_events``)."""


class Relay(Protocol):
    """Shares a bus's events with the other processes on a database (:class:`~fluxserve.jobs.relay.EventRelay`)."""

    def send(self, event: JobEvent) -> threading.Event:
        """Take an event to share (called on the publishing thread: it must not block); it comes back
        through :meth:`EventBus.deliver`, with its id. The flag returned is set once it has."""
        ...

    def since(self, job_id: str, sequence: int) -> list[JobEvent]:
        """The events of ``job_id`` after ``sequence``, as the events table has them (blocking)."""
        ...


class EventBus:
    def __init__(self, boot: int = 0, max_pending: int = MAX_PENDING) -> None:
        self.boot = boot
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._watchers: dict[str, list[Watcher]] = {}
        self._history: OrderedDict[str, deque[JobEvent]] = OrderedDict()
        self._listeners: list[Listener] = []
        self._relay: Relay | None = None

    def relay_through(self, relay: Relay) -> None:
        """Share what is published here with the other processes on the database, through ``relay``."""
        self._relay = relay

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` with every event delivered here (relayed ones too), on the delivering
        thread; it must not block."""
        self._listeners.append(listener)

    @contextmanager
    def watch(self, job_id: str, wanted: EventFilter = every_event) -> Iterator[Watcher]:
        """Receive the events of ``job_id`` that ``wanted`` accepts, published while the block runs
        (call on an event loop). At most ``max_pending`` wait; then the watcher is dropped."""
        watcher = Watcher(self.max_pending, wanted)
        with self._lock:
            self._watchers.setdefault(job_id, []).append(watcher)
        try:
            yield watcher
        finally:
            self._unwatch(job_id, watcher)

    def _unwatch(self, job_id: str, watcher: Watcher) -> None:
        with self._lock:
            watchers = self._watchers.get(job_id, [])
            if watcher in watchers:  # not when it was dropped for falling behind
                watchers.remove(watcher)
            if not watchers:
                self._watchers.pop(job_id, None)

    def watched(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._watchers

    def watchers(self, job_id: str) -> int:
        """How many watchers ``job_id`` has now."""
        with self._lock:
            return len(self._watchers.get(job_id, ()))

    def pending(self, job_id: str) -> int:
        """How many events wait for the watchers of ``job_id``, all together."""
        with self._lock:
            watchers = list(self._watchers.get(job_id, ()))
        return sum(watcher.pending for watcher in watchers)

    def any_watched(self) -> bool:
        """Whether any job has a watcher here now."""
        with self._lock:
            return bool(self._watchers)

    def publish(self, event: JobEvent, *, settle: float = 0.0) -> JobEvent:
        """Number the event, remember it, and hand it to every watcher and listener.

        With a relay, an event for every process is handed to the relay instead, and delivered here
        when it comes back numbered (returned as given: not yet numbered). ``settle``: wait up to so
        many seconds for that, so that this process knows the event when publish returns."""
        if self._relay is not None and not (event.local or event.relayed):
            delivered = self._relay.send(event)
            if settle > 0:
                delivered.wait(settle)
            return event
        return self.deliver(event)

    def deliver(self, event: JobEvent) -> JobEvent:
        """Remember an event and hand it to every watcher and listener. Without a relay it is numbered
        here; with one it keeps the id the events table gave it (none for a :attr:`~JobEvent.local`
        event, or one the database could not take)."""
        with self._lock:
            if self._relay is None:
                event = replace(event, id=f"{self.boot}-{next(self._sequence)}")
            self._remember(event)
            watchers = list(self._watchers.get(event.job_id, ()))
        for watcher in watchers:
            if not watcher.offer(event):
                self._unwatch(event.job_id, watcher)
                log.info("job %s: a watcher fell %d events behind and was dropped", event.job_id, watcher.limit)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # the event has been handed out: the publisher must not fail, or publish it again
                log.exception("job %s: a listener of its %s event failed", event.job_id, event.type)
        return event

    def _remember(self, event: JobEvent) -> None:
        history = self._history.get(event.job_id)
        if history is None:
            history = self._history[event.job_id] = deque(maxlen=EVENTS_PER_JOB)
            while len(self._history) > JOBS_REMEMBERED:
                self._history.popitem(last=False)
        if event.preview is not None or event.terminal:
            _drop_preview(history)  # only the latest preview is kept, and only while the job runs
        history.append(replace(event, partial_image=None) if event.partial_image is not None else event)

    def since(self, job_id: str, last_event_id: str) -> list[JobEvent] | None:
        """The events of ``job_id`` after ``last_event_id``.

        None when they cannot be known: the id is from another process, or older than what is kept.
        With a relay they are read from the events table (a database query: call it off the event loop).
        """
        if self._relay is not None:
            sequence = ascii_int(last_event_id)
            return None if sequence is None else self._relay.since(job_id, sequence)
        with self._lock:
            kept = list(self._history.get(job_id, ()))
        sequence = self.sequence_of(last_event_id)
        if sequence is None:
            return None
        if len(kept) == EVENTS_PER_JOB and sequence < _number(kept[0]):
            return None  # some events after it were forgotten
        return [event for event in kept if _number(event) > sequence]

    def latest(self, job_id: str, kind: JobEventType) -> JobEvent | None:
        """The most recent kept event of ``kind`` for ``job_id``."""
        with self._lock:
            kept = list(self._history.get(job_id, ()))
        return next((event for event in reversed(kept) if event.type == kind), None)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._history.pop(job_id, None)

    def sequence_of(self, event_id: str) -> int | None:
        """The sequence number of an id given out by this process (with a relay: by the events
        table); None for any other id."""
        if self._relay is not None:
            return ascii_int(event_id)
        boot, _, sequence = event_id.partition("-")
        return ascii_int(sequence) if boot == str(self.boot) else None


def _drop_preview(history: deque[JobEvent]) -> None:
    """Remove the preview from the one kept event that has it, if any (searched from the newest)."""
    for index in range(len(history) - 1, -1, -1):
        if history[index].preview is not None:
            history[index] = replace(history[index], preview=None)
            return


def _number(event: JobEvent) -> int:
    """The sequence number of an event this bus published."""
    return int(event.id.partition("-")[2])
