"""Webhook delivery against a real receiver on loopback: signatures, retries, failures, restarts."""

from __future__ import annotations

import json
import logging
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from fluxserve.db import Database
from fluxserve.errors import InvalidRequest
from fluxserve.jobs.models import Job, JobSpec, OutputImage, Usage, WebhookTarget, new_job_id
from fluxserve.jobs.sql_store import SqlJobStore as JobStore
from fluxserve.jobs.views import WebhookDeliveryView
from fluxserve.settings import Settings
from fluxserve.storage.signing import UrlSigner
from fluxserve.webhooks.addresses import Address, Resolver, resolve
from fluxserve.webhooks.attempts import Attempt, retry_after_seconds
from fluxserve.webhooks.retries import next_step
from fluxserve.webhooks.secret import load_or_create_secret, new_secret
from fluxserve.webhooks.sender import WebhookSender
from fluxserve.webhooks.urls import check_webhook_url
from tests.helpers import TEST_TIMEOUT, wait_for
from tests.webhook_receiver import Answer, Receiver
from tests.webhook_resolvers import LOOPBACK, METADATA, NAME, FailingOnce, Rebinding

SPEC = JobSpec(
    model="tiny-random",
    operation="generation",
    prompt="a lighthouse at dusk",
    width=64,
    height=64,
    steps=2,
    guidance=None,
    seed=7,
    n=1,
    output_format="png",
    output_compression=None,
    response_format="url",
)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*statuses: int | Answer, gate: threading.Event | None = None) -> Receiver:
        answers = [s if isinstance(s, Answer) else Answer(s) for s in statuses]
        receiver = Receiver(answers, gate)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def store(database: Database) -> JobStore:
    """On SQLite, then on Postgres (the ``database`` fixture)."""
    return JobStore(database)


@pytest.fixture
def make_sender(tmp_path: Path, store: JobStore) -> Iterator[Callable[..., WebhookSender]]:
    """A started sender on the test's store with fast retries; stopped at the end of the test."""
    started: list[WebhookSender] = []

    def build(
        secret: str | None = None, *, start: bool = True, resolver: Resolver = resolve, **overrides: Any
    ) -> WebhookSender:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "webhook_retry_base_seconds": 0.02,
            "webhook_retry_max_seconds": 0.2,
            "webhook_max_attempts": 3,
            "webhook_timeout_seconds": TEST_TIMEOUT,
        }
        settings = Settings(**{**values, **overrides})
        signer = UrlSigner(b"k" * 32, settings.url_ttl_seconds)
        sender = WebhookSender(store.db, settings, secret or new_secret(), signer, resolver=resolver)
        started.append(sender)
        if start:
            sender.start()
        return sender

    yield build
    for sender in started:
        sender.stop()


def succeeded_job(store: JobStore, url: str, events: tuple[str, ...] = ("started", "completed")) -> Job:
    job = store.create(new_job_id(), SPEC, webhook=WebhookTarget(url, events, "http://fluxserve.test"))
    assert store.claim(SPEC.model, "test-worker", time.time() + 60) is not None
    assert store.mark_succeeded(job.id, [OutputImage(0, 7, 123)], Usage(0.0, 0.004, 2, 1))
    finished = store.get(job.id)
    assert finished is not None
    return finished


def settled(sender: WebhookSender, job_id: str, count: int = 1) -> list[WebhookDeliveryView]:
    """Wait until ``count`` deliveries of the job exist and none is pending; return them."""

    def done() -> bool:
        found = sender.deliveries(job_id)
        return len(found) == count and all(d.status != "pending" for d in found)

    wait_for(done, f"{count} settled deliveries of {job_id}")
    return sender.deliveries(job_id)


# -- signing and the payload ---------------------------------------------------------------


def test_a_delivery_is_signed_per_standard_webhooks_and_carries_the_job(
    store: JobStore, receivers: Callable[..., Receiver], make_sender: Callable[..., WebhookSender]
) -> None:
    receiver = receivers(200)
    secret = new_secret()
    sender = make_sender(secret)
    job = succeeded_job(store, receiver.url)

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert delivery.status == "delivered"
    assert delivery.attempts == 1
    assert delivery.last_status_code == 200
    assert delivery.last_error is None
    assert delivery.delivered_at is not None
    [request] = receiver.requests
    payload = Webhook(secret).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == delivery.id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "fluxserve-webhooks"
    assert payload["type"] == "job.completed"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"]["id"] == job.id
    assert payload["data"]["status"] == "succeeded"
    image_url = payload["data"]["images"][0]["url"]
    assert image_url.startswith(f"http://fluxserve.test/v1/images/files/{job.id}/0.png?expires=")
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(request.body, request.headers)


def test_only_the_events_asked_for_are_sent(
    store: JobStore, receivers: Callable[..., Receiver], make_sender: Callable[..., WebhookSender]
) -> None:
    receiver = receivers(200)
    sender = make_sender()
    job = succeeded_job(store, receiver.url, events=("completed",))
    plain = store.create(new_job_id(), SPEC)

    sender.notify(job, "started")
    sender.notify(plain, "completed")
    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert delivery.event == "completed"
    assert [json.loads(r.body)["type"] for r in receiver.requests] == ["job.completed"]
    assert sender.deliveries(plain.id) == []
    assert sender.wait_idle(TEST_TIMEOUT)


# -- retries and failures ------------------------------------------------------------------


def test_server_errors_are_retried_with_the_same_id_and_body(
    store: JobStore, receivers: Callable[..., Receiver], make_sender: Callable[..., WebhookSender]
) -> None:
    receiver = receivers(500, 500, 200)
    secret = new_secret()
    sender = make_sender(secret, webhook_max_attempts=5)
    job = succeeded_job(store, receiver.url)

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery.id}
    assert len({r.body for r in receiver.requests}) == 1
    for request in receiver.requests:
        Webhook(secret).verify(request.body, request.headers)


def test_429_waits_as_long_as_retry_after_says_capped_at_the_maximum(
    store: JobStore, receivers: Callable[..., Receiver], make_sender: Callable[..., WebhookSender]
) -> None:
    receiver = receivers(Answer(429, {"retry-after": "3600"}), 200)
    sender = make_sender(webhook_retry_max_seconds=1.0)
    job = succeeded_job(store, receiver.url)

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    first, second = receiver.requests
    assert second.at - first.at >= 1.0  # Retry-After (capped to 1 s), not the 0.02 s backoff


def test_a_receiver_that_always_fails_ends_failed_after_the_last_attempt(
    store: JobStore, receivers: Callable[..., Receiver], make_sender: Callable[..., WebhookSender]
) -> None:
    receiver = receivers(503)
    sender = make_sender(webhook_max_attempts=3)
    job = succeeded_job(store, receiver.url)

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert (delivery.last_status_code, delivery.last_error) == (503, "HTTP 503")
    assert delivery.delivered_at is None
    assert len(receiver.requests) == 3


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer(400), "HTTP 400"),
        (Answer(410), "HTTP 410"),
        (Answer(301, {"location": "http://127.0.0.1:9/elsewhere"}), "HTTP 301 (redirects are not followed)"),
    ],
)
def test_client_errors_and_redirects_fail_at_once(
    store: JobStore,
    receivers: Callable[..., Receiver],
    make_sender: Callable[..., WebhookSender],
    answer: Answer,
    reason: str,
) -> None:
    receiver = receivers(answer, 200)
    sender = make_sender(webhook_max_attempts=5)
    job = succeeded_job(store, receiver.url)

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert (delivery.last_status_code, delivery.last_error) == (answer.status, reason)
    assert len(receiver.requests) == 1


def test_a_refused_connection_is_retried_then_failed(
    store: JobStore, make_sender: Callable[..., WebhookSender]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = make_sender(webhook_max_attempts=3)
    job = succeeded_job(store, f"http://127.0.0.1:{port}/hooks")

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert delivery.last_status_code is None
    assert delivery.last_error == "connection refused"


def test_a_hanging_receiver_does_not_hold_up_others(
    store: JobStore, receivers: Callable[..., Receiver], make_sender: Callable[..., WebhookSender]
) -> None:
    gate = threading.Event()
    hanging, healthy = receivers(200, gate=gate), receivers(200)
    sender = make_sender()
    stuck, fine = succeeded_job(store, hanging.url), succeeded_job(store, healthy.url)

    sender.notify(stuck, "completed")
    wait_for(lambda: len(hanging.requests) == 1)
    sender.notify(fine, "completed")

    assert settled(sender, fine.id)[0].status == "delivered"
    assert sender.deliveries(stuck.id)[0].status == "pending"
    gate.set()
    assert settled(sender, stuck.id)[0].status == "delivered"
    assert sender.wait_idle(TEST_TIMEOUT)


def test_backoff_doubles_up_to_the_cap_and_retry_after_counts_only_on_429_and_503(tmp_path: Path) -> None:
    retries: dict[str, Any] = {
        "webhook_retry_base_seconds": 1,
        "webhook_retry_max_seconds": 10,
        "webhook_max_attempts": 9,
    }
    settings = Settings(data_dir=tmp_path, **retries)
    delays = [next_step(Attempt(500), n, settings, 0.0).next_attempt_at for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 10, 10]
    assert next_step(Attempt(503, retry_after=3), 1, settings, 0.0).next_attempt_at == 3
    assert next_step(Attempt(429, retry_after=99), 1, settings, 0.0).next_attempt_at == 10
    assert next_step(Attempt(500, retry_after=3), 1, settings, 0.0).next_attempt_at == 1
    assert next_step(Attempt(error="timed out after 10 s"), 1, settings, 0.0).status == "pending"
    assert next_step(Attempt(500), 9, settings, 0.0).status == "failed"
    assert [retry_after_seconds(v) for v in ("7", " 2 ", "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "\u00b2", None)] == [
        7,
        2,
        None,
        None,
        None,
        None,
    ]


# -- restarts ------------------------------------------------------------------------------


def test_a_pending_retry_is_resumed_by_the_next_sender(
    store: JobStore, receivers: Callable[..., Receiver], make_sender: Callable[..., WebhookSender]
) -> None:
    receiver = receivers(500, 200)
    secret = new_secret()
    first = make_sender(secret, webhook_retry_base_seconds=60, webhook_retry_max_seconds=60)
    job = succeeded_job(store, receiver.url)
    first.notify(job, "completed")
    wait_for(lambda: [d.attempts for d in first.deliveries(job.id)] == [1])
    first.stop()
    [left] = first.deliveries(job.id)
    assert (left.status, left.last_error) == ("pending", "HTTP 500")

    store.db.execute("UPDATE webhook_deliveries SET next_attempt_at = ?", (time.time(),))  # the minute has passed
    second = make_sender(secret)

    [delivery] = settled(second, job.id)
    assert (delivery.id, delivery.status, delivery.attempts) == (left.id, "delivered", 2)
    assert len({(r.headers["webhook-id"], r.body) for r in receiver.requests}) == 1
    Webhook(secret).verify(receiver.requests[1].body, receiver.requests[1].headers)


def test_events_handed_over_before_a_stop_are_kept_for_the_next_sender(
    store: JobStore, receivers: Callable[..., Receiver], make_sender: Callable[..., WebhookSender]
) -> None:
    receiver = receivers(200)
    never_started = make_sender(start=False)
    job = succeeded_job(store, receiver.url)
    never_started.notify(job, "started")
    never_started.notify(job, "completed")
    assert never_started.deliveries(job.id) == []  # notify only hands over

    never_started.stop()
    assert [(d.event, d.status, d.attempts) for d in never_started.deliveries(job.id)] == [
        ("started", "pending", 0),
        ("completed", "pending", 0),
    ]
    assert receiver.requests == []

    later = make_sender()
    deliveries = settled(later, job.id, count=2)
    assert [(d.event, d.status) for d in deliveries] == [("started", "delivered"), ("completed", "delivered")]


# -- URLs and secrets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hooks",
        "https://hooks.example.com:8443/fluxserve?token=abc",
        "http://127.0.0.1:9000/",
        "http://[::1]:8080/x",
    ],
)
def test_http_and_https_urls_are_accepted(url: str) -> None:
    assert check_webhook_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hooks",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "https:///no-host",
        "example.com/hooks",
        "//example.com/hooks",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://example.com/\nx",
        "https://example.com/" + "a" * 2048,
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest, match="http:// or https://") as error:
        check_webhook_url(url)
    assert error.value.param == "webhook_url"


def test_the_secret_is_made_once_and_kept_private_in_the_data_dir(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path, None)
    path = tmp_path / "webhook-secret"

    assert secret.startswith("whsec_")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path, None) == secret
    assert path.read_text().strip() == secret
    Webhook(secret)  # the reference library accepts it


def test_a_configured_secret_is_used_and_a_malformed_one_refused(tmp_path: Path) -> None:
    configured = new_secret()
    assert load_or_create_secret(tmp_path, configured) == configured
    assert not (tmp_path / "webhook-secret").exists()
    for bad in ("", "secret", "whsec_", "whsec_not*base64!", "whsec_c2hvcnQ=", configured.removeprefix("whsec_")):
        with pytest.raises(InvalidRequest) as error:
            load_or_create_secret(tmp_path, bad)
        assert error.value.param == "webhook_secret"


def test_a_corrupt_secret_file_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "webhook-secret").write_text("garbage\n")
    with pytest.raises(InvalidRequest, match="webhook-secret") as error:
        load_or_create_secret(tmp_path, None)
    assert error.value.param == "webhook_secret"
    assert (tmp_path / "webhook-secret").read_text() == "garbage\n"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://[fe80::1]/hooks",
        "http://[::ffff:169.254.169.254]/",
        "http://100.100.100.200/",
        "http://[fd00:ec2::254]/",
        "http://0.0.0.0:8080/",
        "http://224.0.0.1/",
    ],
)
def test_metadata_link_local_and_non_host_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest, match="never posts to") as error:
        check_webhook_url(url)
    assert error.value.param == "webhook_url"


def test_a_delivery_to_a_forbidden_address_fails_at_once_without_a_connection(
    store: JobStore, make_sender: Callable[..., WebhookSender]
) -> None:
    """As when a name resolves to such an address by the time of delivery, or a URL stored before the rule."""
    sender = make_sender(webhook_max_attempts=3)
    job = succeeded_job(store, "http://169.254.169.254/latest/meta-data/")

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.last_error is not None
    assert "link-local, metadata" in delivery.last_error


# -- where a delivery connects --------------------------------------------------------------


def test_a_delivery_connects_to_the_address_that_was_checked(
    store: JobStore,
    receivers: Callable[..., Receiver],
    make_sender: Callable[..., WebhookSender],
) -> None:
    receiver = receivers(204)
    resolver = Rebinding()
    sender = make_sender(resolver=resolver)
    job = succeeded_job(store, f"http://{NAME}:{receiver.port}/hooks")

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 1, None)
    assert resolver.calls == [NAME]  # resolved once: the check and the connection used the same answer
    [request] = receiver.requests
    assert request.headers["host"] == f"{NAME}:{receiver.port}"


def test_a_name_that_does_not_resolve_fails_the_attempt_and_is_retried(
    store: JobStore,
    receivers: Callable[..., Receiver],
    make_sender: Callable[..., WebhookSender],
) -> None:
    receiver = receivers(204)
    resolver = FailingOnce()
    sender = make_sender(resolver=resolver)
    job = succeeded_job(store, f"http://{NAME}:{receiver.port}/hooks")

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert resolver.calls == 2
    assert len(receiver.requests) == 1


def test_a_name_that_never_resolves_fails_after_the_last_attempt_saying_so(
    store: JobStore,
    make_sender: Callable[..., WebhookSender],
) -> None:
    def unresolvable(host: str, port: int) -> list[Address]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    sender = make_sender(resolver=unresolvable, webhook_max_attempts=2)
    job = succeeded_job(store, f"http://{NAME}/hooks")

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert delivery.last_error is not None
    assert f"could not resolve {NAME}" in delivery.last_error


def test_a_name_resolving_to_a_forbidden_address_fails_at_once(
    store: JobStore,
    make_sender: Callable[..., WebhookSender],
) -> None:
    sender = make_sender(resolver=lambda host, port: [LOOPBACK, METADATA], webhook_max_attempts=3)
    job = succeeded_job(store, f"http://{NAME}/hooks")

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.last_error is not None
    assert f"{NAME} is 169.254.169.254" in delivery.last_error


def test_proxy_variables_are_not_used(
    store: JobStore,
    receivers: Callable[..., Receiver],
    make_sender: Callable[..., WebhookSender],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver, proxy = receivers(204), receivers(200)
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sender = make_sender()
    job = succeeded_job(store, receiver.url)

    sender.notify(job, "completed")

    [delivery] = settled(sender, job.id)
    assert delivery.status == "delivered"
    assert (len(receiver.requests), len(proxy.requests)) == (1, 0)


def test_httpx_log_lines_name_only_the_receivers_origin(
    store: JobStore,
    receivers: Callable[..., Receiver],
    make_sender: Callable[..., WebhookSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = receivers(204)
    sender = make_sender()
    job = succeeded_job(store, f"{receiver.url}?token=not-for-logs")

    with caplog.at_level(logging.INFO, logger="httpx"):
        sender.notify(job, "completed")
        [delivery] = settled(sender, job.id)

    assert delivery.status == "delivered"
    lines = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert lines
    assert all("not-for-logs" not in line and f"127.0.0.1:{receiver.port}" in line for line in lines)
