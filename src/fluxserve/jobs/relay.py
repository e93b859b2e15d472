"""Job events shared by the fluxserve processes on one Postgres database.

Each process has its own :class:`~fluxserve.jobs.events.EventBus`. Its relay writes what the
process publishes (lifecycle and progress) to the ``job_events`` table, then ``NOTIFY``s the
new sequence; a listener thread in every process reads the new rows, in sequence order, and
delivers them to its bus, this process's own included. So a watcher connected to any process
hears every job, and an event's id, its row's sequence, means the same in every process: a
client that reconnects to another process with ``Last-Event-ID`` gets what it missed from the
table (:meth:`EventRelay.since`).

- The process an event happened in (its origin) delivers its own object, with its preview and
  partial image; the other processes get the row's copy (image bytes never go through the table).
  A step preview goes through the file store instead (``previews/<job>/``, deleted with the job):
  the origin writes it before the row, the row says so, and the others read it back, so watchers
  of every process that shares the images (a shared data_dir or a bucket) see it. Streamed partial
  images stay with the process that runs the job. The copies are
  marked :attr:`~fluxserve.jobs.models.JobEvent.relayed`: never written again, and no webhook is
  sent for it, since the origin sends that.
- One thread writes, a batch per transaction, under an advisory lock: sequences are committed in
  order, so a reader that has seen row n has seen every row before it.
- While the database cannot be reached, events are delivered here without an id (this process's
  watchers still hear them); lifecycle events are written once it is back, progress is dropped.
- The listener makes its connection again once the database is back and reads what it missed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from fluxserve.db import Database, Notices, Row
from fluxserve.engines.base import Progress
from fluxserve.errors import DatabaseUnavailable
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.models import Job, JobEvent, JobEventType
from fluxserve.jobs.store import JobStore
from fluxserve.storage.files import FileStore

log = logging.getLogger("fluxserve.jobs")

CHANNEL = "fluxserve_job_events"
"""The channel a notice of new rows goes out on; its payload is the newest row's sequence."""
WRITE_LOCK = int.from_bytes(b"fxevents")
"""The advisory lock rows are written under, so that they are committed in sequence order."""
BATCH = 256
"""The most rows written, or read, at once."""
OUTBOX_LIMIT = 4096
"""Events waiting to be written beyond which progress is delivered here only (the database is slow)."""
LISTEN_SECONDS = 0.5
"""How long the listener waits for a notice before it looks whether it should stop."""
RETRY_SECONDS = (0.5, 10.0)
"""After a failure the database is tried again after the first, doubling up to the second."""

WITH_JOB = frozenset(JobEventType) - {JobEventType.QUEUED, JobEventType.PROGRESS}
"""The relayed events that carry the job, read from the store (started and the terminal ones)."""


@dataclass
class _Outgoing:
    """One of this process's events, from :meth:`EventRelay.send` until it is delivered here."""

    event: JobEvent
    here: threading.Event = field(default_factory=threading.Event)
    """Set once delivered here: with its id by the listener, or without one if it could not be written."""

    def deliver(self, bus: EventBus, event_id: str = "") -> None:
        bus.deliver(replace(self.event, id=event_id))
        self.here.set()


class EventRelay:
    """Writes this process's job events to the events table and delivers every process's to its bus."""

    def __init__(
        self, db: Database, notices: Notices, bus: EventBus, store: JobStore, files: FileStore | None = None
    ) -> None:
        self._db, self._notices, self._bus, self._store = db, notices, bus, store
        self._files = files
        """Where step previews are kept for the other processes; None: they stay here."""
        self.origin = bus.boot
        """Whose rows are whose: every process has its own boot number."""
        self._numbers = itertools.count(1)
        self._lock = threading.Condition()
        self._outbox: deque[_Outgoing] = deque()
        self._originals: dict[int, _Outgoing] = {}
        """This process's events being written, by their number here, until the listener delivers them."""
        self._closing = False
        """The writer writes what waits, then ends."""
        self._closed = False
        """Stopped: events are delivered here only."""
        self._listening = threading.Event()
        self._last = 0
        """The newest row delivered here."""
        self._writer = threading.Thread(target=self._write_all, name="job-events-out", daemon=True)
        self._listener = threading.Thread(target=self._listen, name="job-events-in", daemon=True)
        bus.relay_through(self)

    # -- called from other threads -------------------------------------------------------------
    def start(self) -> None:
        """Deliver every row written from now on; older ones are read when a client asks (:meth:`since`)."""
        row = self._db.fetch_one("SELECT coalesce(max(seq), 0) AS newest FROM job_events")
        self._last = 0 if row is None else int(row["newest"])
        self._listening.set()
        self._writer.start()
        self._listener.start()

    def stop(self) -> None:
        """Write what waits, stop listening, and deliver here whatever the listener did not get to."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._writer.ident is not None:
            self._writer.join()
        self._listening.clear()
        if self._listener.ident is not None:
            with contextlib.suppress(DatabaseUnavailable):  # wakes the listener now rather than after its wait
                self._db.execute("SELECT pg_notify(?, ?)", (CHANNEL, str(self._last)))
            self._listener.join()
            with contextlib.suppress(DatabaseUnavailable):  # then they are delivered below, without ids
                self._catch_up()  # the rows the writer wrote last
        self._notices.close()
        with self._lock:
            self._closed = True
            left = [self._originals.pop(number) for number in sorted(self._originals)]
            left += [out for out in self._outbox if not out.here.is_set()]
            self._outbox.clear()
        for out in left:
            out.deliver(self._bus)

    def send(self, event: JobEvent) -> threading.Event:
        """Take one of this process's events to write (never waits); the flag returned is set once it
        has been delivered here."""
        out = _Outgoing(event)
        with self._lock:
            closed = self._closed
            crowded = len(self._outbox) >= OUTBOX_LIMIT and event.type is JobEventType.PROGRESS
            if not (closed or crowded):
                self._outbox.append(out)
                self._lock.notify_all()
                return out.here
        if crowded:
            log.warning("job %s: the database is slow to take events; this step is shown here only", event.job_id)
        out.deliver(self._bus)
        return out.here

    def since(self, job_id: str, sequence: int) -> list[JobEvent]:
        """The events of ``job_id`` after ``sequence``, from the table (without image bytes)."""
        rows = self._db.fetch_all(
            "SELECT * FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, sequence)
        )
        job = self._store.get(job_id) if any(row["type"] in WITH_JOB for row in rows) else None
        return [_copy(row, job) for row in rows]

    # -- the writer thread ---------------------------------------------------------------------
    def _write_all(self) -> None:
        delay, longest = RETRY_SECONDS
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._outbox or self._closing)
                if not self._outbox:
                    return
                batch = [self._outbox.popleft() for _ in range(min(BATCH, len(self._outbox)))]
            if self._write(batch):
                delay = RETRY_SECONDS[0]
                continue
            with self._lock:
                closing = self._lock.wait_for(lambda: self._closing, delay)
            if closing:
                self._give_up()
                return
            delay = min(delay * 2, longest)

    def _write(self, batch: list[_Outgoing]) -> bool:
        """Write ``batch`` as one transaction and notify every listener; False if the database could not
        be reached (its lifecycle events are written later). Events it refused are delivered here only."""
        numbered = [(next(self._numbers), out) for out in batch]
        with self._lock:
            self._originals.update((number, out) for number, out in numbered if not out.here.is_set())
        now = time.time()
        values = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in numbered)
        params: list[Any] = []
        for number, out in numbered:
            preview = self._keep_preview(out.event)
            data = _data(out.event, preview=preview)
            params += [out.event.job_id, JobEventType(out.event.type).value, self.origin, number, data, now]
        try:
            with self._db.transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
                rows = db.fetch_all(
                    "INSERT INTO job_events (job_id, type, origin, origin_seq, data, created_at) "
                    f"VALUES {values} RETURNING seq",
                    params,
                )
                db.execute("SELECT pg_notify(?, ?)", (CHANNEL, str(max(row["seq"] for row in rows))))
            return True
        except DatabaseUnavailable:
            log.warning("could not share %d job events with other processes (the database is down)", len(batch))
            self._not_written(numbered, later=True)
            return False
        except Exception:  # not an outage: writing them again would fail again, and hold up every later event
            log.exception("could not share %d job events with other processes; shown here only", len(batch))
            self._not_written(numbered, later=False)
            return True

    def _keep_preview(self, event: JobEvent) -> bool:
        """Write the event's step preview to the file store for the other processes; True if it is there."""
        progress = event.progress
        if self._files is None or event.preview is None or progress is None:
            return False
        try:
            self._files.write_preview(event.job_id, progress.image_index, progress.step, event.preview)
        except Exception as error:  # the bucket is down, say: the step still goes out, without its picture
            log.warning("job %s: a step preview could not be shared (%s)", event.job_id, error)
            return False
        return True

    def _read_preview(self, event: JobEvent) -> bytes | None:
        progress = event.progress
        if self._files is None or progress is None:
            return None
        try:
            return self._files.read_preview(event.job_id, progress.image_index, progress.step)
        except Exception as error:  # not shared with this process (its own data_dir), or gone with its job
            log.debug("job %s: step preview not readable here (%s)", event.job_id, error)
            return None

    def _not_written(self, numbered: list[tuple[int, _Outgoing]], *, later: bool) -> None:
        """Deliver events that were not written here now, without an id; with ``later``, keep the
        lifecycle ones to write again."""
        with self._lock:  # what is still in _originals is this thread's to deliver, not the listener's
            undelivered = [out for number, _ in numbered if (out := self._originals.pop(number, None)) is not None]
            if later:
                lifecycle = [out for _, out in numbered if out.event.type is not JobEventType.PROGRESS]
                self._outbox.extendleft(reversed(lifecycle))
        for out in undelivered:  # the others the listener delivered: the write went through after all
            out.deliver(self._bus)

    def _give_up(self) -> None:
        """Stopping while the database is down: what waits is delivered here, and never shared."""
        with self._lock:
            left = [out for out in self._outbox if not out.here.is_set()]
            if self._outbox:
                log.warning("%d job events could not be shared with other processes", len(self._outbox))
            self._outbox.clear()
        for out in left:
            out.deliver(self._bus)

    # -- the listener thread -------------------------------------------------------------------
    def _listen(self) -> None:
        delay, longest = RETRY_SECONDS
        down = False
        while self._listening.is_set():
            try:
                if self._notices.wait(LISTEN_SECONDS):
                    self._catch_up()
            except Exception as error:  # an outage (DatabaseUnavailable), or a bug: said once, then tried again
                if not down:
                    log.warning(
                        "cannot hear other processes' job events just now (%s); trying again",
                        error,
                        exc_info=not isinstance(error, DatabaseUnavailable),
                    )
                down = True
                self._wait_to_retry(delay)
                delay = min(delay * 2, longest)
                continue
            if down:
                log.info("hearing other processes' job events again")
            down, delay = False, RETRY_SECONDS[0]

    def _wait_to_retry(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._listening.is_set() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, LISTEN_SECONDS))

    def _catch_up(self) -> None:
        """Deliver every row after the last one delivered, in order."""
        while True:
            rows = self._db.fetch_all(
                "SELECT * FROM job_events WHERE seq > ? ORDER BY seq LIMIT ?", (self._last, BATCH)
            )
            for row in rows:
                self._deliver(row)
                self._last = int(row["seq"])
            if len(rows) < BATCH:
                return

    def _deliver(self, row: Row) -> None:
        if row["origin"] == self.origin:  # this process's own: the event itself, with its images
            with self._lock:
                out = self._originals.pop(int(row["origin_seq"]), None)
            if out is not None:  # else delivered already, without an id, while the database was down
                out.deliver(self._bus, str(row["seq"]))
            return
        try:
            event = _copy(row, None)
        except (ValueError, KeyError, TypeError) as error:  # written by another version, say: never block the rest
            log.error("job event %s cannot be read (%s: %s); skipped", row["seq"], type(error).__name__, error)
            return
        if event.type in WITH_JOB:
            event = replace(event, job=self._store.get(event.job_id))
        if json.loads(row["data"]).get("preview"):
            event = replace(event, preview=self._read_preview(event))
        self._bus.deliver(event)


def _data(event: JobEvent, *, preview: bool = False) -> str:
    """What a row keeps of an event: small JSON, never image bytes (``preview``: its step preview is
    in the file store)."""
    data: dict[str, Any] = {}
    if preview:
        data["preview"] = True
    if event.position is not None:
        data["position"] = event.position
    if (progress := event.progress) is not None:
        data["progress"] = {
            "step": progress.step,
            "total": progress.total_steps,
            "image": progress.image_index,
            "images": progress.images,
            "stage": progress.stage,
        }
    return json.dumps(data)


def _copy(row: Row, job: Job | None) -> JobEvent:
    """The event a row records, as another process delivers it."""
    data = json.loads(row["data"])
    progress = data.get("progress")
    return JobEvent(
        row["job_id"],
        JobEventType(row["type"]),
        progress=None
        if progress is None
        else Progress(
            progress["step"], progress["total"], progress["image"], progress["images"], stage=progress["stage"]
        ),
        job=job,
        position=data.get("position"),
        id=str(row["seq"]),
        relayed=True,
    )
