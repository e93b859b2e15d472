"""GET /v1/jobs/{id}/events: a job's life as Server-Sent Events, for any number of watchers.

Events: ``queued`` (with the position), ``started``, ``progress`` (step and total, and a
preview at the configured interval), then one of ``completed``, ``failed`` or ``canceled``
carrying the whole job, after which the stream ends. A client that reconnects with
``Last-Event-ID`` gets the events it missed; when they are no longer known (the server
restarted, or too long ago) it gets the job's current state instead, then the live events.
Where processes share a Postgres database, ids are the events table's and mean the same in every
process, so a client may reconnect to any of them (:mod:`fluxserve.jobs.relay`).
A watcher that falls too far behind (its client stopped reading) is dropped and its stream
ends; the client resumes with ``Last-Event-ID`` like any other.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fluxserve.api import sse
from fluxserve.api.protocol.jobs import JobEventData, JobProgressEvent, JobQueuedEvent, JobStartedEvent
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.models import Job, JobEvent, JobEventType, JobStatus
from fluxserve.jobs.service import JobService
from fluxserve.jobs.views import view_json
from fluxserve.jobs.watchers import FellBehind


def event_data(event: JobEvent, service: JobService, base_url: str) -> dict[str, Any]:
    """The JSON of one event as clients see it (:mod:`fluxserve.api.protocol.jobs`)."""
    if event.terminal and event.job is not None:
        return view_json(service.view(event.job, base_url))
    payload: JobEventData
    if event.type == JobEventType.QUEUED:
        payload = JobQueuedEvent(job_id=event.job_id, position=event.position)
    elif event.type == JobEventType.STARTED:
        payload = JobStartedEvent(job_id=event.job_id)
        if event.job is not None:
            payload.started_at = event.job.started_at
    elif event.type == JobEventType.PROGRESS and event.progress is not None:
        progress = event.progress
        payload = JobProgressEvent(
            job_id=event.job_id,
            step=progress.step,
            total=progress.total_steps,
            image=progress.image_index,
            images=progress.images,
        )
        if progress.stage is not None:  # hosted models: submitted, polling, downloading
            payload.stage = progress.stage
        if event.preview is not None:
            payload.preview = "data:image/jpeg;base64," + base64.b64encode(event.preview).decode("ascii")
    else:
        payload = JobEventData(job_id=event.job_id)
    return payload.model_dump(mode="json", exclude_unset=True)


END_ID = "end"
"""The id of a terminal event that describes a finished job rather than replaying it."""


def snapshot(job: Job, service: JobService, bus: EventBus) -> list[JobEvent]:
    """Events that describe where ``job`` stands now, for a new watcher or one that missed its history."""
    if job.status is JobStatus.QUEUED:  # the queued event as kept (for its id), with the position of now
        queued = bus.latest(job.id, JobEventType.QUEUED) or JobEvent(job.id, JobEventType.QUEUED)
        return [replace(queued, job=job, position=service.position(job))]
    if job.status is JobStatus.RUNNING:
        started = bus.latest(job.id, JobEventType.STARTED) or JobEvent(job.id, JobEventType.STARTED)
        progress = bus.latest(job.id, JobEventType.PROGRESS)
        return [replace(started, job=job)] + ([progress] if progress is not None else [])
    assert job.status.event is not None
    return [JobEvent(job.id, job.status.event, job=job, id=END_ID)]


def seen_the_end(bus: EventBus, job: Job, last_event_id: str | None) -> bool:
    """True when a reconnecting watcher of a finished job already has its final event (this may read
    the database: call it off the event loop)."""
    if last_event_id is None or not job.status.finished:
        return False
    return last_event_id == END_ID or bus.since(job.id, last_event_id) == []


async def job_events(
    service: JobService, bus: EventBus, job_id: str, last_event_id: str | None, keepalive: float
) -> AsyncIterator[JobEvent | None]:
    """The events of one job for one watcher: where it stands (or what the watcher missed), then live
    events, up to and including the terminal one. None whenever ``keepalive`` seconds pass quietly.

    Each surface frames them its own way (:func:`job_event_stream` here; Replicate's ``urls.stream``).
    """
    with bus.watch(job_id) as live:  # watch first: nothing published from here on is missed
        job = await asyncio.to_thread(service.get, job_id)
        missed = None if last_event_id is None else await asyncio.to_thread(bus.since, job_id, last_event_id)
        backlog = snapshot(job, service, bus) if missed is None else missed
        sent = last_event_id or ""
        for event in backlog:
            yield event
            sent = event.id or sent
            if event.terminal:
                return
        while True:
            try:
                received = await live.next(keepalive)
            except FellBehind:
                return  # the client reconnects with the last id it has and gets what it missed
            if received is not None and sent and not _after(bus, received.id, sent):
                continue  # already sent
            yield received
            if received is not None and received.terminal:
                return


async def job_event_stream(
    service: JobService, bus: EventBus, job_id: str, base_url: str, last_event_id: str | None, keepalive: float
) -> AsyncIterator[bytes]:
    """The event stream of one job as fluxserve frames it (``GET /v1/jobs/{id}/events``)."""
    first = True
    async for event in job_events(service, bus, job_id, last_event_id, keepalive):
        if event is None:
            yield sse.KEEPALIVE
            continue
        yield await _framed(event, service, base_url, first=first)
        first = False


def _after(bus: EventBus, event_id: str, sent_id: str) -> bool:
    new, old = bus.sequence_of(event_id), bus.sequence_of(sent_id)
    return new is None or old is None or new > old


async def _framed(event: JobEvent, service: JobService, base_url: str, *, first: bool = False) -> bytes:
    if event.terminal:  # terminal events carry the stored job (published with it); its view reads the store
        data = await asyncio.to_thread(event_data, event, service, base_url)
    else:
        data = event_data(event, service, base_url)
    return sse.frame(event.type, data, event.id or None, retry=first)
