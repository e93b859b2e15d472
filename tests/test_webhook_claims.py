"""Webhook deliveries are held like jobs: one sender at a time holds a pending delivery on a lease,
attempts only what it holds, and a delivery whose sender died is taken over once its lease runs
out, with its attempt count and due time. On SQLite and Postgres (``FOR UPDATE SKIP LOCKED``).

Two job services over one Postgres database stand for two processes; a real ``fluxserve serve``
killed with SIGKILL is the sender that dies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from fluxserve.api.app import build_services
from fluxserve.api.deps import Services
from fluxserve.db import Database, open_database
from fluxserve.db.postgres_schema import MIGRATIONS as POSTGRES_MIGRATIONS
from fluxserve.db.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.jobs.models import DeliveryStatus, OutputImage, Usage, WebhookTarget, new_job_id
from fluxserve.jobs.sql_store import SqlJobStore
from fluxserve.settings import Settings
from fluxserve.storage.signing import UrlSigner
from fluxserve.webhooks.deliveries import Deliveries, Due, Hold
from fluxserve.webhooks.retries import Step
from fluxserve.webhooks.secret import new_secret
from fluxserve.webhooks.sender import WebhookSender
from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, wait_for
from tests.jobs_support import QUICK, generation_spec
from tests.postgres_support import DATABASES, fetch_all
from tests.servers import LEASE_SECONDS, ServerProcess
from tests.webhook_receiver import Answer, Receiver

MODEL = "tiny-random"
LATER = 10**10
"""A lease that does not run out during a test."""
RETRY = Step(DeliveryStatus.PENDING, 500.0, "HTTP 500")
"""An attempt answered 500, to be tried again at 500."""
SPEC = generation_spec("a lighthouse", model=MODEL, steps=2, size=64)
ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def deliveries(database: Database) -> Deliveries:
    """The deliveries table on each database in turn (see conftest's ``database``)."""
    return Deliveries(database)


def pending(database: Database, count: int = 1, held: Hold | None = None, at: float = 100.0) -> list[str]:
    """``count`` pending deliveries of a new job, due at ``at``, held as ``held`` says."""
    store = SqlJobStore(database)
    job = store.create(new_job_id(), SPEC, webhook=WebhookTarget("http://127.0.0.1:9/h"))
    add = Deliveries(database).add
    return [add(job.id, "completed", "http://127.0.0.1:9/h", "{}", at + n, held=held) for n in range(count)]


def row(database: Database, delivery_id: str) -> dict[str, Any]:
    found = database.fetch_one("SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,))
    assert found is not None
    return {key: found[key] for key in ("status", "attempts", "next_attempt_at", "sender", "lease_until")}


# -- the table ---------------------------------------------------------------------------------------


def test_a_claim_takes_deliveries_nobody_holds_or_whose_lease_ran_out(
    database: Database, deliveries: Deliveries
) -> None:
    [free] = pending(database)
    [live] = pending(database, held=Hold("alive", 200.0), at=200.0)
    [dead] = pending(database, held=Hold("dead", 50.0), at=300.0)
    assert deliveries.record(dead, "dead", 1, 500, RETRY, 40.0)  # attempt 1 failed; next due at 500

    assert deliveries.claim(Hold("new", 400.0), now=60.0) == [Due(100.0, free), Due(500.0, dead)]
    assert row(database, dead) == {
        "status": "pending",
        "attempts": 1,  # the schedule goes on where the dead sender left it
        "next_attempt_at": 500.0,
        "sender": "new",
        "lease_until": 400.0,
    }
    assert row(database, live)["sender"] == "alive"
    assert deliveries.claim(Hold("third", 400.0), now=60.0) == []  # each is held now
    assert deliveries.claim(Hold("third", 500.0), now=450.0) == [Due(100.0, free), Due(200.0, live), Due(500.0, dead)]


def test_every_pending_delivery_is_taken_where_one_process_owns_the_database(
    database: Database, deliveries: Deliveries
) -> None:
    held = pending(database, 2, held=Hold("before-the-restart", LATER))
    assert [due.id for due in deliveries.claim(Hold("after", LATER), now=0.0, every=True)] == held
    assert {row(database, delivery_id)["sender"] for delivery_id in held} == {"after"}


def test_only_the_holder_attempts_and_records_and_a_release_frees_them(
    database: Database, deliveries: Deliveries
) -> None:
    first, second = pending(database, 2, held=Hold("mine", 100.0))
    assert deliveries.hold(first, Hold("other", LATER)) is None
    assert not deliveries.record(first, "other", 1, 500, RETRY, 10.0)
    held = deliveries.hold(first, Hold("mine", 150.0))
    assert held is not None
    assert (held.id, held.attempts) == (first, 0)
    assert row(database, first)["lease_until"] == 150.0
    assert deliveries.renew(Hold("mine", 180.0)) == 2
    assert [row(database, d)["lease_until"] for d in (first, second)] == [180.0, 180.0]

    assert deliveries.record(first, "mine", 1, 200, Step(DeliveryStatus.DELIVERED, None, None), 10.0)
    assert row(database, first) == {
        "status": "delivered",
        "attempts": 1,
        "next_attempt_at": None,
        "sender": "mine",
        "lease_until": None,  # settled: held by nobody
    }
    assert deliveries.hold(first, Hold("mine", 190.0)) is None  # settled
    assert deliveries.release("mine") == 1
    assert row(database, second)["sender"] is None
    assert deliveries.hold(second, Hold("mine", 190.0)) is None  # let go of: it must be claimed again
    assert deliveries.claim(Hold("other", 200.0), now=0.0) == [Due(101.0, second)]


def test_senders_claiming_at_once_take_each_delivery_exactly_once(database: Database, deliveries: Deliveries) -> None:
    ids = pending(database, 60)
    taken: dict[str, list[str]] = {f"sender-{n}": [] for n in range(6)}
    start = threading.Barrier(len(taken))

    def claim(sender: str) -> None:
        start.wait(TEST_TIMEOUT)
        for _ in range(20):
            taken[sender] += [due.id for due in deliveries.claim(Hold(sender, LATER), now=0.0)]

    threads = [threading.Thread(target=claim, args=(sender,)) for sender in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TEST_TIMEOUT)
    claimed = [delivery_id for ids_taken in taken.values() for delivery_id in ids_taken]
    assert sorted(claimed) == sorted(ids)  # every delivery, none twice


# -- senders -----------------------------------------------------------------------------------------


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*statuses: int) -> Receiver:
        receiver = Receiver([Answer(status) for status in statuses])
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


def succeeded_job(store: SqlJobStore, url: str) -> str:
    job = store.create(new_job_id(), SPEC, webhook=WebhookTarget(url, ("completed",)))
    assert store.claim(MODEL, "test-worker", LATER) is not None
    assert store.mark_succeeded(job.id, [OutputImage(0, 7, 123)], Usage(0.0, 0.004, 2, 1))
    return job.id


def webhook_settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_retry_base_seconds": 3600,  # a retry never falls due by itself during a test
        "webhook_retry_max_seconds": 3600,
        "webhook_max_attempts": 5,
        "webhook_timeout_seconds": TEST_TIMEOUT,
        "lease_seconds": TEST_TIMEOUT / 10,
    }
    return make_settings(**{**values, **overrides})


def left_behind(settings: Settings, store: SqlJobStore, url: str, secret: str) -> str:
    """A job whose completed event got a 500 from a process that then stopped; its retry is due now."""
    job_id = succeeded_job(store, url)
    sender = WebhookSender(store.db, settings, secret, UrlSigner(b"k" * 32, settings.url_ttl_seconds))
    sender.start()
    job = store.get(job_id)
    assert job is not None
    sender.notify(job, "completed")
    wait_for(lambda: [d.attempts for d in sender.deliveries(job_id)] == [1], "the first attempt, answered 500")
    sender.stop()
    store.db.execute("UPDATE webhook_deliveries SET next_attempt_at = ?", (time.time(),))  # the hour has passed
    return job_id


def sender_of(services: Services) -> WebhookSender:
    sender = services.jobs.webhooks
    assert isinstance(sender, WebhookSender)
    return sender


@ON_POSTGRES
def test_a_pending_retry_is_sent_once_by_two_processes_starting_on_one_database(
    make_settings: Callable[..., Settings], options: EngineOptions, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(500, 200)
    secret = new_secret()
    # Ingress-only services: they start no worker (nothing to run), only their webhook senders.
    settings = webhook_settings(make_settings, webhook_secret=secret, run_workers=False)
    services = [build_services(settings, {MODEL: DiffusersEngine(MODEL, options)}) for _ in range(2)]
    store = services[0].jobs.store
    assert isinstance(store, SqlJobStore)
    job_id = left_behind(settings, store, receiver.url, secret)
    starting = [threading.Thread(target=one.start) for one in services]
    try:
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join(TEST_TIMEOUT)
        senders = [sender_of(one) for one in services]
        wait_for(lambda: [d.status for d in senders[0].deliveries(job_id)] == ["delivered"], "the retry delivered")
        assert all(sender.wait_idle(TEST_TIMEOUT) for sender in senders)  # both done with what they held
        [delivery] = senders[0].deliveries(job_id)
        assert (delivery.attempts, delivery.last_status_code) == (2, 200)
        assert len(receiver.requests) == 2  # the attempt before the stop, then exactly one more
        assert len({(r.headers["webhook-id"], r.body) for r in receiver.requests}) == 1
        Webhook(secret).verify(receiver.requests[1].body, receiver.requests[1].headers)
    finally:
        for one in services:
            one.stop()


@pytest.mark.slow
@ON_POSTGRES
def test_a_killed_processs_retry_is_sent_by_the_other_once_its_lease_runs_out(
    make_settings: Callable[..., Settings],
    options: EngineOptions,
    receivers: Callable[..., Receiver],
    tmp_path: Path,
    cache_dir: Path,
    engines: dict[str, DiffusersEngine],  # the tiny models, built in the cache once
    database_url: str,
) -> None:
    receiver = receivers(500, 200)
    secret = new_secret()
    retry = TEST_TIMEOUT / 4  # the killed process's retry falls due this long after its first attempt
    environment = {
        "FLUXSERVE_WEBHOOK_SECRET": secret,
        "FLUXSERVE_WEBHOOK_RETRY_BASE_SECONDS": str(retry),
        "FLUXSERVE_WEBHOOK_RETRY_MAX_SECONDS": str(retry),
    }
    holder = ServerProcess(
        tmp_path / "holder", cache_dir, [QUICK["model"]], extra_env=environment, database_url=database_url
    )
    other: Services | None = None
    try:
        holder.wait_ready()
        # The other process runs from before the delivery exists, so only its lease thread can take it over.
        settings = webhook_settings(make_settings, webhook_secret=secret, run_workers=False)
        other = build_services(settings, {MODEL: DiffusersEngine(MODEL, options)})
        other.start()
        with httpx.Client(base_url=holder.url, timeout=TEST_TIMEOUT) as http:
            answer = http.post(
                "/v1/jobs",
                json={**QUICK, "webhook_url": receiver.url, "webhook_events": ["completed"]},
                headers=PREFER_WAIT,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "succeeded", answer.text
            job_id = answer.json()["id"]

        def first_attempt() -> list[dict[str, Any]]:
            sql = "SELECT id, attempts, next_attempt_at, sender FROM webhook_deliveries WHERE event = 'completed'"
            return [row for row in fetch_all(database_url, sql) if row["attempts"] == 1]

        wait_for(first_attempt, "the holder's first attempt, answered 500")
        [before] = first_attempt()
        assert before["sender"].split("/")[1] == str(holder.process.pid)
        holder.kill()

        def delivered() -> bool:
            [found] = fetch_all(database_url, "SELECT status FROM webhook_deliveries WHERE id = %s", (before["id"],))
            return bool(found["status"] == "delivered")

        wait_for(delivered, "the delivery sent by the other process", timeout=TEST_TIMEOUT + LEASE_SECONDS)
        [after] = fetch_all(database_url, "SELECT * FROM webhook_deliveries WHERE id = %s", (before["id"],))
        assert (after["attempts"], after["last_status_code"]) == (2, 200)
        assert after["sender"] == sender_of(other).id
        assert [d.attempts for d in sender_of(other).deliveries(job_id) if d.id == before["id"]] == [2]
        completed = [r for r in receiver.requests if r.headers["webhook-id"] == before["id"]]
        assert len(completed) == 2  # the holder's attempt, then the other's
        assert completed[1].at >= before["next_attempt_at"]  # when the holder had scheduled it, not at once
        Webhook(secret).verify(completed[1].body, completed[1].headers)
    finally:
        holder.stop()
        if other is not None:
            other.stop()


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_a_delivery_pending_before_the_upgrade_is_resumed_after_it(
    database_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(200)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, webhook_timeout_seconds=TEST_TIMEOUT)
    with monkeypatch.context() as before:  # the schema before deliveries had holders: version 10
        before.setattr("fluxserve.db.sqlite.MIGRATIONS", SQLITE_MIGRATIONS[:10])
        before.setattr("fluxserve.db.postgres.MIGRATIONS", POSTGRES_MIGRATIONS[:-1])
        old = open_database(settings)
        assert old.schema_version == 10
        job_id = succeeded_job(SqlJobStore(old), receiver.url)
        old.execute(
            "INSERT INTO webhook_deliveries (id, job_id, event, url, payload, status, attempts, next_attempt_at, "
            "created_at) VALUES ('msg_old', ?, 'completed', ?, '{}', 'pending', 1, ?, ?)",
            (job_id, receiver.url, time.time(), time.time()),
        )
        old.close()
    database = open_database(settings)
    sender = WebhookSender(database, settings, new_secret(), UrlSigner(b"k" * 32, settings.url_ttl_seconds))
    try:
        assert database.schema_version == len(SQLITE_MIGRATIONS) == POSTGRES_MIGRATIONS[-1][0] == 11
        sender.start()
        wait_for(lambda: [d.status for d in sender.deliveries(job_id)] == ["delivered"], "the old delivery sent")
        [delivery] = sender.deliveries(job_id)
        assert (delivery.id, delivery.attempts) == ("msg_old", 2)
        assert [r.headers["webhook-id"] for r in receiver.requests] == ["msg_old"]
    finally:
        sender.stop()
        database.close()
