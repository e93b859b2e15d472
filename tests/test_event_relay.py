"""Job events across processes on one Postgres database (fluxserve.jobs.relay).

Two job services over one database stand for two processes, as in tests/test_job_claims.py: each
has its own bus, relay, listener connection and webhook sender; only the database joins them.
The first serves the model the jobs use, so it runs every job; the second only watches.
(tests/test_two_processes.py does the same with real server processes.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import cast

import pytest

from fluxserve.api.app import build_services
from fluxserve.api.deps import Services
from fluxserve.engines.base import Progress
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.errors import DatabaseUnavailable
from fluxserve.jobs.models import JobEvent, JobEventType, JobSpec, JobStatus, WebhookTarget, new_job_id
from fluxserve.jobs.watchers import Watcher
from fluxserve.settings import Settings
from fluxserve.webhooks.sender import WebhookSender
from tests.helpers import TEST_TIMEOUT, wait_for
from tests.jobs_support import generation_spec
from tests.postgres_support import Cluster, fetch_all
from tests.webhook_receiver import Answer, Receiver

MODEL = "tiny-random-base"
ONLY_WATCHES = "tiny-random"

on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def spec(prompt: str, steps: int = 3, size: int = 64) -> JobSpec:
    return generation_spec(prompt, model=MODEL, steps=steps, size=size)


LONG = {"steps": 100, "size": 768}
"""A job that runs until it is canceled, for the purposes of a test."""


@pytest.fixture
def make_services(
    make_settings: Callable[..., Settings], engines: dict[str, DiffusersEngine]
) -> Iterator[Callable[..., Services]]:
    """Started services on the test's database, each serving one model; stopped at the end."""
    started: list[Services] = []

    def make(model: str, **overrides: object) -> Services:
        settings = make_settings(models=[model], preview_every=1, database_timeout_seconds=1, **overrides)
        services = build_services(settings, {model: engines[model]})
        services.start()
        started.append(services)
        return services

    yield make
    for services in reversed(started):
        services.stop()


@pytest.fixture
def pair(make_services: Callable[..., Services]) -> tuple[Services, Services]:
    """The service that runs the jobs, and one that only watches them."""
    return make_services(MODEL), make_services(ONLY_WATCHES)


async def until_end(watcher: Watcher) -> list[JobEvent]:
    """The events ``watcher`` gets up to the job's terminal one."""
    received: list[JobEvent] = []
    while not received or not received[-1].terminal:
        event = await watcher.next(TEST_TIMEOUT)
        assert event is not None, f"no event in {TEST_TIMEOUT:g} s after {[e.type for e in received]}"
        received.append(event)
    return received


def shared(events: list[JobEvent]) -> list[JobEvent]:
    """The events that went through the table, from the job's start (a process's own queue position
    updates have no id; the queued event may reach a watcher or not, depending on when it began)."""
    return [event for event in events if event.id and event.type is not JobEventType.QUEUED]


def run_watched(runner: Services, watchers: list[Services], prompt: str) -> tuple[str, list[list[JobEvent]]]:
    """Queue a job behind a long one on ``runner``, watch it on each of ``watchers``, let it run; its events."""
    blocker = runner.jobs.submit(spec(f"{prompt}: blocker", **LONG), []).job.id
    wait_for(lambda: runner.jobs.workers[MODEL].running_job == blocker, "the blocker running")
    job_id = runner.jobs.submit(spec(prompt), []).job.id

    async def watch() -> list[list[JobEvent]]:
        with runner.bus.watch(job_id) as first, watchers[0].bus.watch(job_id) as second:
            await asyncio.to_thread(runner.jobs.cancel, blocker, None)
            return list(await asyncio.gather(until_end(first), until_end(second)))

    return job_id, asyncio.run(watch())


@on_postgres
def test_a_process_that_does_not_share_the_images_gets_the_steps_without_previews(
    make_services: Callable[..., Services], tmp_path_factory: pytest.TempPathFactory
) -> None:
    runner = make_services(MODEL)
    elsewhere = make_services(ONLY_WATCHES, data_dir=tmp_path_factory.mktemp("elsewhere"))
    _, (here, there) = run_watched(runner, [elsewhere], "unshared")

    steps_here = [event for event in shared(here) if event.type is JobEventType.PROGRESS]
    steps_there = [event for event in shared(there) if event.type is JobEventType.PROGRESS]
    assert [event.progress for event in steps_there] == [event.progress for event in steps_here]
    assert all(event.preview is not None for event in steps_here)
    assert all(event.preview is None for event in steps_there)


@on_postgres
def test_a_job_run_in_one_process_is_watched_in_another_with_the_same_ids(
    pair: tuple[Services, Services], make_services: Callable[..., Services]
) -> None:
    runner, watcher = pair
    job_id, (here, there) = run_watched(runner, [watcher], "watched")

    expected = [JobEventType.STARTED] + [JobEventType.PROGRESS] * 3 + [JobEventType.COMPLETED]
    assert [event.type for event in shared(here)] == expected
    assert [event.id for event in shared(there)] == [event.id for event in shared(here)]
    ids = [int(event.id) for event in shared(here)]
    assert ids == sorted(ids)
    assert [event.progress for event in shared(there)] == [event.progress for event in shared(here)]
    # Step previews reach the other process through the file store they share, byte for byte.
    assert all(event.preview is not None for event in here if event.type is JobEventType.PROGRESS)
    assert [event.preview for event in shared(there)] == [event.preview for event in shared(here)]
    assert not any(event.relayed for event in here)
    assert all(event.relayed for event in shared(there))
    completed = there[-1].job
    assert completed is not None
    assert completed.status is JobStatus.SUCCEEDED
    assert watcher.jobs.progress(job_id) == runner.jobs.progress(job_id)

    # Every process reads the same history from the table, one started after the job ended too.
    late = make_services(ONLY_WATCHES)
    for services in (runner, watcher, late):
        missed = services.bus.since(job_id, shared(here)[0].id)
        assert missed is not None
        assert [event.id for event in missed] == [event.id for event in shared(here)[1:]]
        assert [event.type for event in missed] == expected[1:]
        assert services.bus.since(job_id, shared(here)[-1].id) == []


@on_postgres
def test_a_watcher_in_another_process_hears_its_job_move_up_the_queue(pair: tuple[Services, Services]) -> None:
    runner, watcher = pair
    blocker = runner.jobs.submit(spec("blocker", **LONG), []).job.id
    wait_for(lambda: runner.jobs.workers[MODEL].running_job == blocker, "the blocker running")
    ahead, job_id = (runner.jobs.submit(spec(f"queued {n}"), []).job.id for n in range(2))

    async def watch() -> JobEvent | None:
        with watcher.bus.watch(job_id) as events:
            await asyncio.to_thread(runner.jobs.cancel, ahead, None)  # its canceled event reaches the watcher
            event = await events.next(TEST_TIMEOUT)
            while event is not None and not event.local:  # the job's own queued event may come first
                event = await events.next(TEST_TIMEOUT)
            return event

    try:
        moved = asyncio.run(watch())
        assert moved is not None
        assert (moved.type, moved.position, moved.local) == (JobEventType.QUEUED, 1, True)
    finally:
        runner.jobs.cancel(blocker, None)


@on_postgres
def test_a_webhook_is_sent_by_the_process_that_ran_the_job_only(pair: tuple[Services, Services]) -> None:
    runner, watcher = pair
    receiver = Receiver([Answer(204)])
    try:
        target = WebhookTarget(receiver.url)
        job_id = runner.jobs.submit(spec("hooked"), [], webhook=target).job.id
        wait_for(lambda: len(receiver.requests) == 2, "started and completed posted")
        # A later job's end, heard in the watching process, comes after the first job's events there
        # (a listener delivers in order): by then, that process would have handed them to its sender.
        _, (_, fence) = run_watched(runner, [watcher], "fence")
        assert fence[-1].type is JobEventType.COMPLETED
        for services in (watcher, runner):
            assert cast(WebhookSender, services.jobs.webhooks).wait_idle(TEST_TIMEOUT)
        assert len(receiver.requests) == 2
        deliveries = watcher.jobs.webhooks.deliveries(job_id) if watcher.jobs.webhooks else []
        assert sorted(delivery.event for delivery in deliveries) == ["completed", "started"]
    finally:
        receiver.close()


@on_postgres
def test_a_jobs_events_are_deleted_with_it(pair: tuple[Services, Services]) -> None:
    runner, watcher = pair
    job_id, _ = run_watched(runner, [watcher], "short-lived")
    url = runner.settings.database_url
    assert url is not None
    count = "SELECT count(*) AS events FROM job_events WHERE job_id = %s"
    assert fetch_all(url, count, (job_id,))[0]["events"] >= 5
    runner.jobs.delete(job_id, None)
    assert fetch_all(url, count, (job_id,)) == [{"events": 0}]


def answers(services: Services) -> bool:
    try:
        services.jobs.store.queued_count(MODEL)
    except DatabaseUnavailable:
        return False
    return True


@pytest.mark.slow
@on_postgres
def test_the_relay_rides_out_a_postgres_restart(pair: tuple[Services, Services], postgres_cluster: Cluster) -> None:
    runner, watcher = pair
    # A job no worker takes (nobody serves its model), so that it has no events but the test's.
    job_id = runner.jobs.store.create(new_job_id(), replace(spec("never runs"), model="nobody")).id

    async def outage() -> tuple[list[JobEvent | None], list[JobEvent]]:
        with runner.bus.watch(job_id) as here, watcher.bus.watch(job_id) as there:
            postgres_cluster.stop()
            try:  # published while the database is down: heard here at once, without ids
                runner.bus.publish(JobEvent(job_id, JobEventType.PROGRESS, progress=Progress(1, 2, 0, 1)))
                runner.bus.publish(JobEvent(job_id, JobEventType.CANCELED))
                seen_here = [await here.next(TEST_TIMEOUT), await here.next(TEST_TIMEOUT)]
            finally:
                postgres_cluster.start()
            # Once the database is back, the lifecycle event reaches the other process; the step does not.
            return seen_here, await until_end(there)

    seen_here, seen_there = asyncio.run(outage())
    assert [(event.type, event.id) for event in seen_here if event is not None] == [
        (JobEventType.PROGRESS, ""),
        (JobEventType.CANCELED, ""),
    ]
    assert [event.type for event in seen_there] == [JobEventType.CANCELED]
    assert seen_there[0].id
    assert seen_there[0].relayed

    # Both listeners hear new jobs again, with no restart of either service.
    wait_for(lambda: answers(runner), "the database answering again")
    _, (here_after, there_after) = run_watched(runner, [watcher], "after the outage")
    assert there_after[-1].type is JobEventType.COMPLETED
    assert [event.id for event in shared(there_after)] == [event.id for event in shared(here_after)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_has_no_relay_and_numbers_events_itself(make_settings: Callable[..., Settings]) -> None:
    services = build_services(make_settings(), {})
    try:
        assert services.jobs.relay is None
        event = services.bus.publish(JobEvent("job_x", JobEventType.PROGRESS))
        assert event.id == f"{services.bus.boot}-1"
    finally:
        services.stop()
