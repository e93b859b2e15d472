"""Webhooks through the real server: a job's events reach a receiver on loopback, signed, and a
receiver that fails forever changes nothing about the job."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook

from fluxserve.webhooks.secret import new_secret
from tests.helpers import PREFER_WAIT, wait_for
from tests.jobs_support import JOBS, QUICK, LiveServer
from tests.servers import serve_in_thread
from tests.webhook_receiver import Answer, Receiver

SECRET = new_secret()


@pytest.fixture
def make_server(make_server: Callable[..., LiveServer]) -> Callable[..., LiveServer]:
    """Servers that sign with a secret the tests know."""
    return lambda **overrides: make_server(**{"webhook_secret": SECRET, **overrides})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver([Answer(204)])
    yield started
    started.close()


def deliveries_settled(server: LiveServer, job_id: str, count: int) -> list[dict[str, Any]]:
    def settled() -> bool:
        webhook = server.job(job_id)["webhook"]
        return len(webhook["deliveries"]) == count and all(d["status"] != "pending" for d in webhook["deliveries"])

    wait_for(settled, f"{count} settled deliveries of {job_id}")
    deliveries: list[dict[str, Any]] = server.job(job_id)["webhook"]["deliveries"]
    return deliveries


def test_a_job_posts_its_events_signed_the_standard_webhooks_way(
    make_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    server = make_server()
    job = server.submit({**QUICK, "webhook_url": receiver.url}, headers=PREFER_WAIT)
    assert job["webhook"]["events"] == ["started", "completed", "failed", "canceled"]

    deliveries = deliveries_settled(server, job["id"], 2)
    assert [(d["event"], d["status"], d["attempts"]) for d in deliveries] == [
        ("started", "delivered", 1),
        ("completed", "delivered", 1),
    ]
    verifier = Webhook(SECRET)
    bodies = []
    for request in receiver.requests:
        bodies.append(verifier.verify(request.body, request.headers))
    assert [body["type"] for body in bodies] == ["job.started", "job.completed"]
    completed = bodies[1]["data"]
    assert completed["id"] == job["id"]
    assert completed["status"] == "succeeded"
    assert completed["images"][0]["url"].startswith(server.url)
    assert {request.headers["webhook-id"] for request in receiver.requests} == {d["id"] for d in deliveries}


def test_a_forged_body_fails_verification(make_server: Callable[..., LiveServer], receiver: Receiver) -> None:
    server = make_server()
    job = server.submit({**QUICK, "webhook_url": receiver.url, "webhook_events": ["completed"]})
    deliveries_settled(server, job["id"], 1)
    request = receiver.requests[0]
    forged = json.loads(request.body)
    forged["data"]["status"] = "failed"
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(json.dumps(forged).encode(), request.headers)


def test_the_event_filter_and_a_multipart_request(make_server: Callable[..., LiveServer], receiver: Receiver) -> None:
    server = make_server()
    data = {"prompt": "a form", "model": "tiny-random-base", "size": "64x64", "steps": "2"}
    data |= {"webhook_url": receiver.url, "webhook_events": "completed, failed"}
    response = server.http.post(JOBS, data=data)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["webhook"]["events"] == ["completed", "failed"]
    deliveries = deliveries_settled(server, job["id"], 1)
    assert deliveries[0]["event"] == "completed"
    assert [json.loads(r.body)["type"] for r in receiver.requests] == ["job.completed"]


def test_a_canceled_job_posts_canceled(make_server: Callable[..., LiveServer], receiver: Receiver) -> None:
    server = make_server()
    blocker = server.submit({**QUICK, "size": "256x256", "steps": 100})
    job = server.submit({**QUICK, "webhook_url": receiver.url})
    server.http.post(job["urls"]["cancel"])
    deliveries = deliveries_settled(server, job["id"], 1)
    assert deliveries[0]["event"] == "canceled"
    assert json.loads(receiver.requests[0].body)["data"]["status"] == "canceled"
    server.http.post(blocker["urls"]["cancel"])


def test_a_receiver_that_always_fails_leaves_the_job_succeeded_and_says_why(
    make_server: Callable[..., LiveServer],
) -> None:
    failing = Receiver([Answer(503)])
    try:
        server = make_server(webhook_max_attempts=3, webhook_retry_base_seconds=0.01)
        job = server.submit({**QUICK, "webhook_url": failing.url, "webhook_events": ["completed"]})
        assert server.wait_status(job["id"], "succeeded")["images"]
        [delivery] = deliveries_settled(server, job["id"], 1)
        assert delivery["status"] == "failed"
        assert delivery["attempts"] == 3
        assert delivery["last_status_code"] == 503
        assert "503" in delivery["last_error"]
        assert len(failing.requests) == 3
        assert len({r.headers["webhook-id"] for r in failing.requests}) == 1  # one delivery, retried
    finally:
        failing.close()


def test_an_unreachable_receiver_does_not_slow_the_queue(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(webhook_max_attempts=2, webhook_retry_base_seconds=0.01)
    dead = "http://127.0.0.1:9/hooks"  # the discard port: nothing listens
    jobs = [server.submit({**QUICK, "seed": i, "webhook_url": dead}) for i in range(3)]
    for job in jobs:
        assert server.wait_status(job["id"], "succeeded")["status"] == "succeeded"
    deliveries = deliveries_settled(server, jobs[-1]["id"], 2)
    assert all(d["status"] == "failed" for d in deliveries)


def test_sync_requests_take_webhooks_too(make_server: Callable[..., LiveServer], receiver: Receiver) -> None:
    server = make_server()
    body = {**QUICK, "webhook_url": receiver.url, "webhook_events": ["completed"]}
    response = server.http.post("/v1/images/generations", json=body)
    assert response.status_code == 200
    deliveries_settled(server, response.headers["x-job-id"], 1)
    assert json.loads(receiver.requests[0].body)["data"]["id"] == response.headers["x-job-id"]


def test_a_job_failed_at_start_up_posts_failed(make_app: Callable[..., FastAPI], receiver: Receiver) -> None:
    first = make_app(models=["tiny-random-base"], webhook_secret=SECRET)
    with serve_in_thread(first) as url, LiveServer(first, url) as server:
        server.submit({**QUICK, "size": "256x256", "steps": 100})
        waiting = server.submit({**QUICK, "webhook_url": receiver.url, "webhook_events": ["failed"]})
    # the next start serves another model: the waiting job cannot run and fails
    second = make_app(models=["tiny-random"], webhook_secret=SECRET)
    with serve_in_thread(second) as url, LiveServer(second, url) as server:
        [delivery] = deliveries_settled(server, waiting["id"], 1)
        assert delivery["event"] == "failed"
        body = Webhook(SECRET).verify(receiver.requests[0].body, receiver.requests[0].headers)
        assert body["data"]["error"]["type"] == "model_not_found"


def test_a_webhook_body_carries_the_job_without_the_delivery_records(
    make_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    server = make_server()
    job = server.submit({**QUICK, "webhook_url": receiver.url, "webhook_events": ["completed"]})
    deliveries_settled(server, job["id"], 1)
    sent = json.loads(receiver.requests[0].body)["data"]["webhook"]
    assert sent == {"url": receiver.url, "events": ["completed"]}
    assert len(server.job(job["id"])["webhook"]["deliveries"]) == 1
