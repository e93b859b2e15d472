"""The store is the queue: workers claim jobs on leases they renew, so several workers (in one
process or several) share it, each job runs once, a cancel reaches whoever holds the job, and a
job whose worker died goes back to the queue. On SQLite and on Postgres (``FOR UPDATE SKIP LOCKED``).

Two job services over one database stand for two processes: each has its own worker, event bus
and connection; only the database joins them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fluxserve.api.app import build_services
from fluxserve.api.deps import Services
from fluxserve.db import Database
from fluxserve.engines.base import GenerationRequest, GenerationResult, ProgressCallback
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.jobs.models import JobSpec, JobStatus, OutputImage, Usage, new_job_id
from fluxserve.jobs.sql_store import SqlJobStore
from fluxserve.settings import Settings
from tests.helpers import TEST_TIMEOUT, wait_for
from tests.jobs_support import generation_spec
from tests.postgres_support import BOTH_DATABASES

MODEL = "tiny-random-base"


def spec(prompt: str = "a lighthouse", steps: int = 2, size: int = 64, model: str = MODEL) -> JobSpec:
    return generation_spec(prompt, model=model, steps=steps, size=size)


LATER = 10**10
"""A lease that does not run out during a test."""


@pytest.fixture
def store(database: Database) -> SqlJobStore:
    """A store on each database in turn (see conftest's ``database``)."""
    return SqlJobStore(database)


def queue(store: SqlJobStore, count: int, model: str = MODEL) -> list[str]:
    return [store.create(new_job_id(), spec(model=model)).id for _ in range(count)]


def test_a_claim_takes_the_oldest_queued_job_of_its_model(store: SqlJobStore) -> None:
    other = queue(store, 1, model="tiny-random")
    first, second = queue(store, 2)
    assert store.position(second) == 2
    job = store.claim(MODEL, "w1", LATER)
    assert job is not None
    assert job.id == first
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)
    assert store.position(second) == 1
    assert store.position(first) is None
    assert store.queued(MODEL) == [second]
    assert store.queued_count("tiny-random") == 1
    claimed = store.claim(MODEL, "w2", LATER)
    assert claimed is not None
    assert claimed.id == second
    assert store.claim(MODEL, "w1", LATER) is None  # the other model's job is not this worker's
    assert store.queued("tiny-random") == other


def test_many_workers_claiming_at_once_take_each_job_exactly_once(store: SqlJobStore) -> None:
    ids = queue(store, 120)
    taken: dict[str, list[str]] = {f"w{n}": [] for n in range(6)}

    def work(worker: str) -> None:
        while (job := store.claim(MODEL, worker, LATER)) is not None:
            taken[worker].append(job.id)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [job_id for jobs in taken.values() for job_id in jobs]
    assert sorted(claimed) == sorted(ids)  # every job, none twice
    assert {job.attempts for job_id in ids if (job := store.get(job_id))} == {1}


def test_leases_renewed_cancels_seen_and_lost_jobs_reported(store: SqlJobStore) -> None:
    kept, canceled, lost = queue(store, 3)
    for _ in range(3):
        store.claim(MODEL, "w1", 100.0)
    assert store.request_cancel(canceled)
    # Another worker holds ``lost`` now (w1's lease on it ran out and it was claimed again).
    assert store.release(lost, "w1")
    assert store.claim(MODEL, "w2", LATER) is not None
    assert store.renew([kept, canceled, lost], "w1", 200.0) == {canceled, lost}
    assert [job.id for job in store.requeue_expired(now=150.0)] == []  # kept's lease now runs to 200
    assert [job.id for job in store.requeue_expired(now=250.0)] == [kept, canceled]
    assert store.queued(MODEL) == [kept, canceled]
    assert store.renew([], "w1", 300.0) == set()


def test_only_the_worker_holding_a_job_finishes_it(store: SqlJobStore) -> None:
    (job_id,) = queue(store, 1)
    store.claim(MODEL, "stale", 100.0)
    store.requeue_expired(now=101.0)
    store.claim(MODEL, "fresh", LATER)
    outputs, usage = [OutputImage(0, 1, 10)], Usage(0.0, 0.004, 2, 1)
    assert not store.mark_succeeded(job_id, outputs, usage, worker="stale")
    assert not store.mark_canceled(job_id, only_if=JobStatus.RUNNING, worker="stale")
    store.mark_failed(job_id, "server_error", "stale", worker="stale")  # type: ignore[arg-type]
    assert not store.release(job_id, "stale")
    job = store.get(job_id)
    assert job is not None
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 2)
    assert store.mark_succeeded(job_id, outputs, usage, worker="fresh")


# -- two job services over one store, as two processes would be --------------------------------------


class CountingEngine(DiffusersEngine):
    """The tiny model, counting the jobs it runs."""

    def __init__(self, model: str, options: EngineOptions, runs: Counter[str]) -> None:
        super().__init__(model, options)
        self.runs = runs

    def generate(
        self,
        request: GenerationRequest | Any,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        self.runs[request.prompt] += 1
        return super().generate(request, progress, cancel)


@pytest.fixture
def pair(
    make_settings: Callable[..., Settings], options: EngineOptions
) -> Iterator[tuple[Services, Services, Counter[str]]]:
    """Two services on one data folder, each with its own worker for the model, counting runs."""
    runs: Counter[str] = Counter()
    # Leases long enough that no busy machine lets a running job's lease lapse (the dead worker's is
    # short: see below); expired ones are looked for every lease_seconds / 2.
    settings = make_settings(models=[MODEL], lease_seconds=TEST_TIMEOUT / 10, queue_poll_seconds=0.05)
    first = build_services(settings, {MODEL: CountingEngine(MODEL, options, runs)})
    second = build_services(settings, {MODEL: CountingEngine(MODEL, options, runs)})
    first.start()
    second.start()
    yield first, second, runs
    first.stop()
    second.stop()


@BOTH_DATABASES
def test_two_services_share_a_burst_and_run_each_job_once(pair: tuple[Services, Services, Counter[str]]) -> None:
    first, second, runs = pair
    jobs = [first.jobs.submit(spec(f"job {n}"), []).job.id for n in range(4)]
    jobs += [second.jobs.submit(spec(f"job {n}"), []).job.id for n in range(4, 8)]
    wait_for(lambda: all(first.jobs.get(job_id).status is JobStatus.SUCCEEDED for job_id in jobs), "every job done")
    assert runs == Counter({f"job {n}": 1 for n in range(8)})
    assert {first.jobs.get(job_id).attempts for job_id in jobs} == {1}


@BOTH_DATABASES
def test_a_cancel_sent_to_one_service_stops_the_job_the_other_runs(
    pair: tuple[Services, Services, Counter[str]],
) -> None:
    first, second, _ = pair
    job_id = first.jobs.submit(spec("long", steps=100, size=768), []).job.id

    # A worker records the job as its own just after the claim that marks it running.
    def holders() -> list[Services]:
        return [services for services in (first, second) if services.jobs.workers[MODEL].running_job == job_id]

    wait_for(holders, "a worker holding it")
    [holder] = holders()
    other = second if holder is first else first
    other.jobs.cancel(job_id, None)
    wait_for(lambda: first.jobs.get(job_id).status is JobStatus.CANCELED, "the job canceled by its worker")
    wait_for(lambda: holder.jobs.workers[MODEL].running_job is None, "its worker free again")


@BOTH_DATABASES
def test_a_job_whose_worker_died_runs_again_once_its_lease_runs_out(
    pair: tuple[Services, Services, Counter[str]],
) -> None:
    first, _second, runs = pair
    store = first.jobs.store
    busy = [first.jobs.submit(spec(f"busy {n}", steps=100, size=768), []).job.id for n in range(2)]
    wait_for(lambda: all(first.jobs.get(job_id).status is JobStatus.RUNNING for job_id in busy), "both workers busy")
    # A third worker, somewhere, claims the next job and dies: nobody renews its lease.
    orphan = first.jobs.submit(spec("orphan"), []).job.id
    claimed = store.claim(MODEL, "dead-worker", time.time() + 0.2)
    assert claimed is not None
    assert claimed.id == orphan
    for job_id in busy:
        first.jobs.cancel(job_id, None)
    wait_for(lambda: first.jobs.get(orphan).status is JobStatus.SUCCEEDED, "the orphan run again and done")
    assert (runs["orphan"], first.jobs.get(orphan).attempts) == (1, 2)


@BOTH_DATABASES
def test_wait_returns_a_job_that_a_worker_in_another_service_ran(
    make_settings: Callable[..., Settings], options: EngineOptions
) -> None:
    """The waiting service's worker never runs (it is not started) and hears none of the other's
    events: only the store tells it that the job finished."""
    settings = make_settings(models=[MODEL], queue_poll_seconds=0.05)
    waiting = build_services(settings, {MODEL: DiffusersEngine(MODEL, options)})
    running = build_services(settings, {MODEL: DiffusersEngine(MODEL, options)})
    running.start()
    try:
        job_id = waiting.jobs.submit(spec("elsewhere"), []).job.id
        job = asyncio.run(waiting.jobs.wait(job_id, timeout=TEST_TIMEOUT))
        assert job.status is JobStatus.SUCCEEDED
        assert job.outputs
    finally:
        running.stop()
        waiting.stop()
