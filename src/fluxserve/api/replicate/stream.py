"""A prediction's ``urls.stream``: Replicate's Server-Sent Events, made from the job's events.

Replicate's streaming format, as its official clients read it: every event has an ``id`` and one of
four types: ``logs`` (plain text), ``output`` (plain text; for an image model one finished image's
URL), ``error`` (JSON ``{"detail": ...}``), then ``done`` (JSON: ``{}``, or ``{"reason": "error"}`` or
``{"reason": "canceled"}``), after which the stream ends.

An image prediction streams ``logs`` while it waits and runs (its queue position, ``Using seed: N``,
then a tqdm-style line per step, as in the prediction's ``logs``), one ``output`` per image and
``done``. Ids are ``<job event id>:<n>``, n counting the events one job event makes, so a client that
reconnects with ``Last-Event-ID`` gets the rest of that job event's events, then those after it, as
``GET /v1/jobs/{id}/events`` resumes (:func:`fluxserve.api.job_events.job_events`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fluxserve.api import sse
from fluxserve.api.job_events import job_events, seen_the_end
from fluxserve.api.replicate.predictions import progress_line
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.models import Job, JobEvent, JobEventType, JobStatus
from fluxserve.jobs.service import JobService
from fluxserve.numbers import ascii_int

NO_ID = "now"
"""The id part of events made from a job event that has none (a snapshot after a restart)."""


@dataclass(frozen=True)
class Frame:
    event: str  # output, logs, error or done
    data: str


def _done(reason: str | None = None) -> Frame:
    return Frame("done", "{}" if reason is None else json.dumps({"reason": reason}))


def end_frames(job: Job, service: JobService, base_url: str) -> list[Frame]:
    """How a finished prediction's stream ends (this reads the store: call it off the event loop)."""
    view = service.view(job, base_url)
    if job.status is JobStatus.SUCCEEDED:
        return [Frame("output", image.url) for image in view.images or []] + [_done()]
    if job.status is JobStatus.FAILED:
        message = view.error.message if view.error is not None else "the prediction failed"
        return [Frame("error", json.dumps({"detail": message})), _done("error")]
    return [_done("canceled")]


def _frames(event: JobEvent, seed: int) -> list[Frame]:
    """The events a job event that is not the last one makes."""
    if event.type is JobEventType.QUEUED:
        where = "" if event.position is None else f", position {event.position}"
        return [Frame("logs", f"Waiting in the queue{where}")]
    if event.type is JobEventType.STARTED:
        return [Frame("logs", f"Using seed: {seed}")]
    if event.type is JobEventType.PROGRESS and event.progress is not None:
        return [Frame("logs", progress_line(event.progress.step, event.progress.total_steps))]
    return []


def resume_point(last_event_id: str | None) -> tuple[str | None, int]:
    """``Last-Event-ID`` as (the job event id, how many of its events the client has, less one)."""
    if not last_event_id:
        return None, -1
    event_id, colon, index = last_event_id.rpartition(":")
    number = ascii_int(index)
    if not colon or number is None:
        return last_event_id, 1 << 30  # not an id of ours: the whole of that event was had
    return (None if event_id == NO_ID else event_id), number


async def prediction_stream(
    service: JobService, bus: EventBus, job: Job, base_url: str, last_event_id: str | None, keepalive: float
) -> AsyncIterator[bytes] | None:
    """The stream of a prediction, or None when ``Last-Event-ID`` shows the client has it all."""
    event_id, had = resume_point(last_event_id)
    if event_id is not None and await asyncio.to_thread(seen_the_end, bus, job, event_id):
        rest = (await asyncio.to_thread(end_frames, job, service, base_url))[had + 1 :]
        return None if not rest else _sent([(f"{event_id}:{had + 1 + n}", frame) for n, frame in enumerate(rest)])
    return _live(service, bus, job, base_url, event_id, keepalive)


async def _sent(frames: list[tuple[str, Frame]]) -> AsyncIterator[bytes]:
    for n, (frame_id, frame) in enumerate(frames):
        yield sse.text_frame(frame.event, frame.data, frame_id, retry=n == 0)


async def _live(
    service: JobService, bus: EventBus, job: Job, base_url: str, last_event_id: str | None, keepalive: float
) -> AsyncIterator[bytes]:
    first = True
    async for event in job_events(service, bus, job.id, last_event_id, keepalive):
        if event is None:
            yield sse.KEEPALIVE
            continue
        if event.terminal:
            ended = event.job if event.job is not None else await asyncio.to_thread(service.get, job.id)
            frames = await asyncio.to_thread(end_frames, ended, service, base_url)
        else:
            frames = _frames(event, job.spec.seed)
        for n, frame in enumerate(frames):
            yield sse.text_frame(frame.event, frame.data, f"{event.id or NO_ID}:{n}", retry=first)
            first = False
