"""``stream: true`` on the images endpoints: OpenAI's image streaming events over SSE.

``image_generation.partial_image`` for each partial image the request asked for, then
``image_generation.completed`` with the image and ``usage`` (``image_edit.*`` for edits). A
failure is an ``error`` event in the API's error shape, which the official client raises.
A client that leaves before its job starts cancels it, unless it sent an ``Idempotency-Key``
(it means to come back); once started, the job finishes and is kept (its id is in the
``x-job-id`` header). A client too slow to take its partial images misses some; the final
image still comes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

from fluxserve.api import sse
from fluxserve.api.errors import body_of
from fluxserve.api.protocol.images import (
    CompletedImageType,
    ImageCompletedEvent,
    ImageStreamEvent,
    ImageUsage,
    PartialImageEvent,
    PartialImageType,
)
from fluxserve.errors import StorageUnavailable
from fluxserve.imaging.encode import ImageFormat
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.models import Job, JobEvent, JobStatus, Operation, PartialImage
from fluxserve.jobs.service import JobService
from fluxserve.jobs.watchers import FellBehind
from fluxserve.storage.files import FileStore

log = logging.getLogger("fluxserve.api")


def _common(job: Job) -> dict[str, Any]:
    """The fields every event of ``job``'s stream shares."""
    spec = job.spec
    return {
        "background": "opaque",
        "created_at": int(job.created_at),
        "output_format": ImageFormat(spec.output_format).value,
        "quality": spec.quality or "auto",
        "size": f"{spec.width}x{spec.height}",
    }


def _frame(kind: str, event: ImageStreamEvent) -> bytes:
    return sse.frame(kind, event.model_dump(mode="json", exclude_unset=True))


def partial_event(job: Job, partial: PartialImage) -> bytes:
    edit = job.spec.operation == Operation.EDIT
    kind: PartialImageType = "image_edit.partial_image" if edit else "image_generation.partial_image"
    b64 = base64.b64encode(partial.data).decode("ascii")
    event = PartialImageEvent(type=kind, b64_json=b64, partial_image_index=partial.index, **_common(job))
    return _frame(kind, event)


def completed_events(job: Job, files: FileStore) -> list[bytes]:
    """The completed event of each image (a streamed job has one), read from its stored file."""
    assert job.usage is not None
    edit = job.spec.operation == Operation.EDIT
    kind: CompletedImageType = "image_edit.completed" if edit else "image_generation.completed"
    events = []
    for output in job.outputs:
        data = files.read_output(job.id, output.index, ImageFormat(job.spec.output_format))
        event = ImageCompletedEvent(
            type=kind,
            b64_json=base64.b64encode(data).decode("ascii"),
            usage=ImageUsage(**job.usage.to_json()),
            seed=output.seed,
            id=job.id,
            **_common(job),
        )
        if job.spec.user is not None:
            event.safety_identifier = job.spec.user
        events.append(_frame(kind, event))
    return events


def error_event(job: Job) -> bytes:
    """The error a finished, unsuccessful job ends its stream with: the body a response would carry."""
    failure = job.failure()
    assert failure is not None
    return sse.frame("error", body_of(failure))


def _streamed(event: JobEvent) -> bool:
    """What an image stream sends: partial images and the end (not every step's progress)."""
    return event.partial_image is not None or event.terminal


async def image_stream(
    service: JobService, bus: EventBus, files: FileStore, job: Job, *, keepalive: float, cancel_if_left: bool = True
) -> AsyncIterator[bytes]:
    finished = False
    try:
        with bus.watch(job.id, _streamed) as live:
            job = await asyncio.to_thread(service.get, job.id)
            while not job.status.finished:
                try:
                    event = await live.next(keepalive)
                except FellBehind:  # the partial images it could not take are skipped: wait for the end
                    event, job = None, await service.wait(job.id, timeout=keepalive)
                if event is None:
                    yield sse.KEEPALIVE
                elif event.partial_image is not None:
                    yield partial_event(job, event.partial_image)
                elif event.terminal:
                    job = await asyncio.to_thread(service.get, job.id)
        finished = True
        if job.status is JobStatus.SUCCEEDED:
            try:
                frames = await asyncio.to_thread(completed_events, job, files)
            except StorageUnavailable as error:  # the bucket is down: the stream ends with the 503's body
                frames = [sse.frame("error", body_of(error))]
            for frame in frames:
                yield frame
        else:
            yield error_event(job)
    finally:
        if (
            not finished and cancel_if_left and service.cancel_if_queued(job.id)
        ):  # quick; must not await while being torn down
            log.info("job %s canceled: its stream closed before it started", job.id)
