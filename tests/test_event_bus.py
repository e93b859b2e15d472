"""The event bus and its watchers: bounded for slow readers, resumable, and small in what it keeps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from fluxserve.api.app import build_services
from fluxserve.engines.base import Progress
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.jobs.events import EVENTS_PER_JOB, EventBus
from fluxserve.jobs.models import JobEvent, JobSpec, JobStatus, PartialImage
from fluxserve.jobs.watchers import FellBehind, terminal_only
from fluxserve.settings import Settings
from tests.helpers import TEST_TIMEOUT

JOB = "job_1"
PREVIEW = b"\xff\xd8" + b"p" * 4000  # stands in for a preview JPEG: only its size matters here


def step(number: int, job_id: str = JOB, *, preview: bytes | None = None, partial: bool = False) -> JobEvent:
    partial_image = PartialImage(0, b"i" * 50_000) if partial else None
    return JobEvent(
        job_id, "progress", progress=Progress(number, 1000, 0, 1), preview=preview, partial_image=partial_image
    )


def publish_steps(bus: EventBus, count: int, *, preview: bytes | None = None) -> list[JobEvent]:
    """Publish from a thread of its own, as a worker does; return the events as numbered."""
    published: list[JobEvent] = []

    def work() -> None:
        published.extend(bus.publish(step(n, preview=preview)) for n in range(1, count + 1))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(TEST_TIMEOUT)
    assert not worker.is_alive(), "publishing did not finish"
    return published


def test_a_watcher_that_does_not_read_is_dropped_at_its_limit_and_others_go_on() -> None:
    bus = EventBus(boot=1, max_pending=8)

    async def main() -> None:
        with bus.watch(JOB) as stalled, bus.watch(JOB) as reader:
            published, taken = [], []
            for _batch in range(20):  # the reader takes each batch; the stalled watcher never reads
                published += publish_steps(bus, 5, preview=PREVIEW)
                taken += [await reader.next(TEST_TIMEOUT) for _ in range(5)]
                assert stalled.pending <= 8
            assert stalled.fell_behind
            assert stalled.pending == 0  # its events were released when it was dropped
            with pytest.raises(FellBehind):
                await stalled.next()
            assert [event.id for event in taken if event] == [event.id for event in published]
            assert bus.watchers(JOB) == 1  # the reader only

    asyncio.run(main())


def test_publishing_to_a_stalled_watcher_never_holds_more_than_the_limit() -> None:
    bus = EventBus(max_pending=16)

    async def main() -> None:
        with bus.watch(JOB) as stalled:
            for n in range(1, 1000):  # on the watcher's own loop: it cannot read while this runs
                bus.publish(step(n, preview=PREVIEW))
                assert bus.pending(JOB) <= 16
            assert stalled.fell_behind
            assert bus.pending(JOB) == 0
            assert bus.watchers(JOB) == 0
        assert not bus.watched(JOB)

    asyncio.run(main())


def test_a_dropped_watcher_resumes_from_the_last_event_it_read() -> None:
    bus = EventBus(boot=3, max_pending=4)

    async def main() -> list[JobEvent]:
        with bus.watch(JOB) as watcher:
            publish_steps(bus, 3)
            read = [await watcher.next(TEST_TIMEOUT) for _ in range(2)]
            publish_steps(bus, 10)
            with pytest.raises(FellBehind):
                await watcher.next(TEST_TIMEOUT)
        last = read[-1]
        assert last is not None
        missed = bus.since(JOB, last.id)
        assert missed is not None
        return missed

    missed = asyncio.run(main())
    assert [event.progress.step for event in missed if event.progress] == [3, *list(range(1, 11))]


def test_only_the_latest_preview_is_kept_and_none_once_the_job_ends() -> None:
    bus = EventBus()
    published = publish_steps(bus, EVENTS_PER_JOB + 100, preview=PREVIEW)
    oldest_kept = published[-EVENTS_PER_JOB].id
    kept = bus.since(JOB, oldest_kept)
    assert kept is not None
    assert len(kept) == EVENTS_PER_JOB - 1
    assert [event.id for event in kept if event.preview is not None] == [published[-1].id]
    latest = bus.latest(JOB, "progress")
    assert latest is not None
    assert latest.preview == PREVIEW

    bus.publish(JobEvent(JOB, "completed"))
    kept = bus.since(JOB, published[-EVENTS_PER_JOB + 1].id)  # the oldest kept now
    assert kept is not None
    assert kept[-1].type == "completed"
    assert all(event.preview is None for event in kept)


def test_partial_images_go_to_watchers_but_are_never_kept() -> None:
    bus = EventBus()

    async def main() -> JobEvent | None:
        with bus.watch(JOB) as watcher:
            bus.publish(step(1, partial=True))
            return await watcher.next(TEST_TIMEOUT)

    received = asyncio.run(main())
    assert received is not None
    assert received.partial_image is not None
    kept = bus.latest(JOB, "progress")
    assert kept is not None
    assert kept.partial_image is None


def test_a_terminal_only_watcher_keeps_no_progress() -> None:
    bus = EventBus(max_pending=2)

    async def main() -> JobEvent | None:
        with bus.watch(JOB, terminal_only) as watcher:
            for n in range(1, 500):
                bus.publish(step(n))
            assert watcher.pending == 0
            bus.publish(JobEvent(JOB, "canceled"))
            return await watcher.next(TEST_TIMEOUT)

    received = asyncio.run(main())
    assert received is not None
    assert received.type == "canceled"


def test_waiting_for_a_job_queues_none_of_its_progress(
    make_settings: Callable[..., Settings], klein: DiffusersEngine
) -> None:
    services = build_services(make_settings(sse_max_pending_events=4), {"tiny-random": klein})  # not started: jobs wait
    service = services.jobs
    spec = JobSpec("tiny-random", "generation", "a cat", 64, 64, 2, None, 1, 1, "png", None, "b64_json")
    try:
        job = service.submit(spec, []).job

        async def main() -> JobStatus:
            waiting = asyncio.create_task(service.wait(job.id))
            await asyncio.sleep(0)  # wait() runs up to its first await: it is watching
            assert service.bus.watchers(job.id) == 1
            for n in range(1, 200):  # on the waiter's loop: it cannot read while this runs
                service.bus.publish(step(n, job.id))
            assert service.bus.pending(job.id) == 0
            assert service.bus.watchers(job.id) == 1  # not dropped either
            service.cancel_if_queued(job.id)
            return (await asyncio.wait_for(waiting, TEST_TIMEOUT)).status

        assert asyncio.run(main()) is JobStatus.CANCELED
    finally:
        services.stop()
