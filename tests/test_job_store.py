"""The job store and the database under it, the same tests on SQLite and on Postgres.

Every job state change, its usage row in the same transaction, history pages, idempotency, the
clean-up, the restart's requeue, the deliveries a deleted job takes with it, and the migrations.
"""

from __future__ import annotations

import threading
import time

import pytest

from fluxserve.accounts import usage as usage_rows
from fluxserve.accounts.usage import daily_usage, megapixels_since
from fluxserve.db import Database
from fluxserve.errors import ErrorCode, InvalidRequest, Moderated
from fluxserve.jobs.models import JobSpec, JobStatus, OutputImage, Usage, WebhookTarget, new_job_id
from fluxserve.jobs.sql_store import SqlJobStore
from fluxserve.jobs.store import Idempotency
from fluxserve.webhooks.deliveries import Deliveries, Hold

SPEC = JobSpec(
    model="tiny-random",
    operation="generation",
    prompt="a lighthouse at dusk, 100% \u00e9t\u00e9? 'quoted'",
    width=64,
    height=64,
    steps=2,
    guidance=None,
    seed=7,
    n=2,
    output_format="png",
    output_compression=None,
    response_format="url",
)
USED = Usage(input_megapixels=0.0, output_megapixels=0.0078, steps=4, images=2)


@pytest.fixture
def store(database: Database) -> SqlJobStore:
    return SqlJobStore(database)


def test_a_job_goes_from_queued_to_succeeded_and_is_billed_as_it_ran(store: SqlJobStore) -> None:
    webhook = WebhookTarget("https://example.com/hook", ("completed",), "http://fluxserve.test")
    created = store.create(new_job_id(), SPEC, webhook=webhook, owner="key_a", charged_at=1000.0)
    assert created.status is JobStatus.QUEUED
    assert store.get(created.id) == created
    assert store.unfinished("key_a") == 1
    assert megapixels_since(store.db, "key_a", 0) == pytest.approx(SPEC.megapixels)

    claimed = store.claim(SPEC.model, "worker-1", time.time() + 60)
    assert claimed is not None
    assert claimed.id == created.id
    assert store.claim(SPEC.model, "worker-1", time.time() + 60) is None  # only a queued job starts
    running = store.get(created.id)
    assert running is not None
    assert running.status is JobStatus.RUNNING
    assert running.attempts == 1
    assert running.started_at is not None

    outputs = [OutputImage(0, 7, 123), OutputImage(1, 8, 456)]
    assert store.mark_succeeded(created.id, outputs, USED)
    assert not store.mark_succeeded(created.id, outputs, USED)
    done = store.get(created.id)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert done.outputs == outputs
    assert done.usage == USED
    assert done.webhook == webhook
    assert done.spec == SPEC
    assert done.created_at == created.created_at  # a double, exactly: never rounded to float4
    assert store.unfinished("key_a") == 0
    assert megapixels_since(store.db, "key_a", 0) == pytest.approx(0.0078)
    [day] = daily_usage(store.db, since=0, key_id="key_a")
    assert (day.day, day.jobs, day.images, day.steps) == ("1970-01-01", 1, 2, 4)


def test_failed_and_canceled_jobs_release_their_usage(store: SqlJobStore) -> None:
    failed = store.create(new_job_id(), SPEC, owner="key_a")
    store.mark_failed(failed.id, ErrorCode.PROVIDER_BUSY, "busy", retry_after=30)
    canceled = store.create(new_job_id(), SPEC, owner="key_a")
    assert store.mark_canceled(canceled.id, only_if=JobStatus.QUEUED, note="was queued")
    assert not store.mark_canceled(canceled.id, only_if=JobStatus.QUEUED)

    found = store.get(failed.id)
    assert found is not None
    assert (found.status, found.error_type, found.error_message, found.error_retry_after) == (
        JobStatus.FAILED,
        ErrorCode.PROVIDER_BUSY,
        "busy",
        30,
    )
    gone = store.get(canceled.id)
    assert gone is not None
    assert (gone.status, gone.error_type, gone.error_message) == (JobStatus.CANCELED, ErrorCode.CANCELED, "was queued")
    assert megapixels_since(store.db, "key_a", 0) == 0
    assert daily_usage(store.db, since=0, every_key=True) == []


def test_a_moderated_failure_keeps_which_side_was_refused(store: SqlJobStore) -> None:
    queued = store.create(new_job_id(), SPEC, owner="key_a")
    store.mark_failed(queued.id, ErrorCode.MODERATION_BLOCKED, "withheld", moderated=Moderated.OUTPUT)
    found = store.get(queued.id)
    assert found is not None
    assert (found.error_type, found.error_moderated) == (ErrorCode.MODERATION_BLOCKED, Moderated.OUTPUT)
    # A refused request is a job that failed at once: never queued, nothing reserved, its key still replays it.
    webhook = WebhookTarget("https://example.com/hook", ("failed",), "http://fluxserve.test", shape="bfl")
    refused = store.create_refused(
        new_job_id(),
        SPEC,
        "refused",
        moderated=Moderated.INPUT,
        webhook=webhook,
        idempotency=Idempotency("key-1", "hash-1"),
        owner="key_a",
    )
    assert store.get(refused.id) == refused
    assert (refused.status, refused.error_type, refused.error_moderated) == (
        JobStatus.FAILED,
        ErrorCode.MODERATION_BLOCKED,
        Moderated.INPUT,
    )
    assert refused.started_at is None
    assert refused.finished_at is not None
    assert store.by_idempotency_key("key-1", "key_a") == (refused, "hash-1")
    assert store.claim(SPEC.model, "worker-1", time.time() + 60) is None
    assert store.unfinished("key_a") == 0
    assert megapixels_since(store.db, "key_a", 0) == 0


def test_history_pages_newest_first_per_owner_with_filters(store: SqlJobStore) -> None:
    mine = [store.create(new_job_id(), SPEC, owner="key_a") for _ in range(5)]
    theirs = store.create(new_job_id(), SPEC, owner="key_b")
    anonymous = store.create(new_job_id(), SPEC)
    store.mark_failed(mine[1].id, ErrorCode.SERVER_ERROR, "no")

    seen, cursor = [], None
    while True:
        page = store.page(limit=2, cursor=cursor, owner="key_a")
        seen += [job.id for job in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [job.id for job in reversed(mine)]
    assert [job.id for job in store.page(owner="key_a", status=JobStatus.FAILED).jobs] == [mine[1].id]
    assert store.page(owner="key_a", model="other").jobs == []
    assert [job.id for job in store.recent(owner="key_b")] == [theirs.id]
    assert [job.id for job in store.recent()] == [anonymous.id]
    with pytest.raises(InvalidRequest):
        store.page(cursor="not-a-cursor")


def test_an_idempotency_key_belongs_to_its_owner_and_is_unique_per_owner(store: SqlJobStore) -> None:
    key = Idempotency("retry-1", "hash-a")
    mine = store.create(new_job_id(), SPEC, idempotency=key, owner="key_a")
    anonymous = store.create(new_job_id(), SPEC, idempotency=key)
    assert store.by_idempotency_key("retry-1", "key_a") == (mine, "hash-a")
    assert store.by_idempotency_key("retry-1") == (anonymous, "hash-a")
    assert store.by_idempotency_key("retry-1", "key_b") is None
    with pytest.raises(Exception, match=r"(?i)unique"):
        store.create(new_job_id(), SPEC, idempotency=key, owner="key_a")
    with pytest.raises(Exception, match=r"(?i)unique"):
        store.create(new_job_id(), SPEC, idempotency=key)


def test_clean_up_deletes_finished_jobs_with_their_deliveries_and_keeps_their_usage(store: SqlJobStore) -> None:
    finished = store.create(new_job_id(), SPEC, owner="key_a")
    store.claim(SPEC.model, "worker-1", time.time() + 60)
    store.mark_succeeded(finished.id, [OutputImage(0, 7, 1)], USED)
    waiting = store.create(new_job_id(), SPEC, owner="key_a")
    deliveries = Deliveries(store.db)
    deliveries.add(finished.id, "completed", "https://example.com/hook", "{}", time.time())
    kept = deliveries.add(waiting.id, "started", "https://example.com/hook", "{}", time.time())

    assert store.finished_before(time.time() + 1) == [finished.id]
    assert not store.delete(waiting.id)  # not finished
    assert store.delete(finished.id)
    assert store.get(finished.id) is None
    assert deliveries.of_job(finished.id) == []  # the schema deletes a job's deliveries with it
    assert [d.id for d in deliveries.of_job(waiting.id)] == [kept]
    assert [due.id for due in deliveries.claim(Hold("a-sender", time.time() + 60), time.time(), every=True)] == [kept]
    assert megapixels_since(store.db, "key_a", 0) == pytest.approx(0.0078 + SPEC.megapixels)


def test_a_restart_queues_running_and_queued_jobs_again_oldest_first(store: SqlJobStore) -> None:
    jobs = [store.create(new_job_id(), SPEC) for _ in range(3)]
    store.claim(SPEC.model, "worker-1", time.time() + 60)
    store.claim(SPEC.model, "worker-1", time.time() + 60)
    store.mark_succeeded(jobs[1].id, [], USED)
    requeued = store.requeue_unfinished()
    assert [job.id for job in requeued] == [jobs[0].id, jobs[2].id]
    assert all(job.status is JobStatus.QUEUED and job.started_at is None for job in requeued)
    assert [job.attempts for job in requeued] == [1, 0]


def test_a_transaction_happens_whole_or_not_at_all(database: Database) -> None:
    def reserve_then_fail() -> None:
        with database.transaction() as statements:
            usage_rows.reserve(statements, "job_a", "key_a", "tiny-random", 1.0, usage_rows.Used(0.0, 1.0, 2, 1))
            raise RuntimeError("before the commit")

    with pytest.raises(RuntimeError, match="before the commit"):
        reserve_then_fail()
    assert megapixels_since(database, "key_a", 0) == 0
    with database.transaction() as statements:
        usage_rows.reserve(statements, "job_a", "key_a", "tiny-random", 1.0, usage_rows.Used(0.0, 1.0, 2, 1))
        assert statements.execute("UPDATE usage SET state = 'billed' WHERE job_id = ?", ("job_a",)) == 1
    assert megapixels_since(database, "key_a", 0) == 1.0


def test_boots_count_up_once_each_even_from_many_threads(database: Database) -> None:
    first = database.next_boot()
    boots: list[int] = []
    threads = [threading.Thread(target=lambda: boots.append(database.next_boot())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(boots) == list(range(first + 1, first + 9))


def test_the_schema_is_at_the_same_version_on_both(database: Database) -> None:
    from fluxserve.db.sqlite import MIGRATIONS

    assert database.schema_version == len(MIGRATIONS)
