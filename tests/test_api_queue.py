"""The queue behind the sync endpoints, on a real server: backpressure, disconnects, cancel.

A "slow" job is a real one: tiny-random-base at 256x256 with 100 steps takes about a second
on a laptop CPU, long enough to queue others behind it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fluxserve.api.deps import Services
from fluxserve.imaging.encode import ImageFormat
from fluxserve.jobs.models import Job, JobStatus
from fluxserve.jobs.worker import ModelWorker
from tests.helpers import TEST_TIMEOUT, wait_for
from tests.jobs_support import LiveServer
from tests.servers import serve_in_thread

GENERATIONS = "/v1/images/generations"
SLOW = {"model": "tiny-random-base", "prompt": "slow", "size": "256x256", "steps": 100}
QUICK = {"model": "tiny-random-base", "prompt": "quick", "size": "64x64", "steps": 1}


class Server:
    def __init__(self, app: FastAPI, url: str) -> None:
        self.app, self.url = app, url
        self.services: Services = app.state.services

    @property
    def worker(self) -> ModelWorker:
        return self.services.jobs.workers["tiny-random-base"]

    def jobs(self) -> list[Job]:
        return self.services.jobs.store.recent()

    def post_in_background(self, body: dict[str, Any], timeout: float = TEST_TIMEOUT) -> dict[str, Any]:
        """Send a request on a thread; the returned dict gets "response" or "error" when it ends."""
        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                outcome["response"] = httpx.post(self.url + GENERATIONS, json=body, timeout=timeout)
            except httpx.HTTPError as error:
                outcome["error"] = error

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        outcome["thread"] = thread
        return outcome


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> Server:
    live = make_server(models=["tiny-random-base"], max_queue=1)
    return Server(live.app, live.url)


def test_a_full_queue_is_429_with_retry_after_and_loses_nothing(server: Server) -> None:
    running = server.post_in_background(SLOW)
    wait_for(lambda: server.worker.running_job is not None)
    queued = server.post_in_background(QUICK)
    wait_for(lambda: server.worker.queued == 1)

    refused = httpx.post(server.url + GENERATIONS, json=QUICK, timeout=TEST_TIMEOUT)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "queue_full"
    assert "x-should-retry" not in refused.headers  # nothing was started: retrying is right

    for outcome in (running, queued):
        outcome["thread"].join(TEST_TIMEOUT)
        assert outcome["response"].status_code == 200
    assert sorted(job.status for job in server.jobs()) == [JobStatus.SUCCEEDED] * 2
    assert httpx.post(server.url + GENERATIONS, json=QUICK, timeout=TEST_TIMEOUT).status_code == 200


def test_a_client_that_leaves_before_its_job_starts_cancels_it(server: Server) -> None:
    running = server.post_in_background(SLOW)
    wait_for(lambda: server.worker.running_job is not None)
    leaving = server.post_in_background(QUICK, timeout=0.5)
    leaving["thread"].join(TEST_TIMEOUT)
    assert isinstance(leaving["error"], httpx.ReadTimeout)

    wait_for(lambda: any(job.status is JobStatus.CANCELED for job in server.jobs()))
    running["thread"].join(TEST_TIMEOUT)
    assert running["response"].status_code == 200
    statuses = {job.spec.prompt: job.status for job in server.jobs()}
    assert statuses == {"slow": JobStatus.SUCCEEDED, "quick": JobStatus.CANCELED}


def test_a_client_that_leaves_after_its_job_started_finds_the_result_kept(server: Server) -> None:
    leaving = server.post_in_background({**SLOW, "response_format": "url"}, timeout=0.3)
    leaving["thread"].join(TEST_TIMEOUT)
    assert isinstance(leaving["error"], httpx.ReadTimeout)

    wait_for(lambda: server.jobs()[0].status.finished)
    [job] = server.jobs()
    assert job.status is JobStatus.SUCCEEDED
    url = httpx.get(f"{server.url}/v1/jobs/{job.id}", timeout=TEST_TIMEOUT).json()["images"][0]["url"]
    image = httpx.get(url, timeout=TEST_TIMEOUT)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"


def test_a_failure_after_the_job_started_says_do_not_retry(server: Server) -> None:
    waiting = server.post_in_background(SLOW)
    wait_for(lambda: server.worker.running_job is not None)
    job_id = server.worker.running_job
    assert job_id is not None
    server.services.jobs.cancel(job_id, owner=None)  # someone else stops it mid-run

    waiting["thread"].join(TEST_TIMEOUT)
    response = waiting["response"]
    assert response.status_code == 409
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-job-id"] == job_id
    assert response.json()["error"]["code"] == "cancelled"
    assert server.services.jobs.get(job_id).status is JobStatus.CANCELED
    assert not server.services.jobs.files.has_output(job_id, 0, ImageFormat.PNG)


def test_the_event_loop_stays_responsive_while_generating(server: Server) -> None:
    running = server.post_in_background(SLOW)
    wait_for(lambda: server.worker.running_job is not None)
    answered = 0
    while server.worker.running_job is not None and answered < 20:
        assert httpx.get(server.url + "/health", timeout=TEST_TIMEOUT / 12).status_code == 200
        answered += 1
    running["thread"].join(TEST_TIMEOUT)
    assert running["response"].status_code == 200
    assert answered > 0


def test_a_graceful_shutdown_puts_the_running_job_back_in_the_queue(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(models=["tiny-random-base"])
    with serve_in_thread(app) as url:
        server = Server(app, url)
        server.post_in_background(SLOW)
        wait_for(lambda: server.worker.running_job is not None)
        job_id = server.worker.running_job
        assert job_id is not None
        server.services.stop()  # what the lifespan does on SIGTERM
    database = app.state.services.settings.data_dir / "jobs.sqlite3"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        [(status,)] = connection.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchall()
    assert status == "queued"  # not canceled: it was accepted, so it goes back to the queue
    reopened = make_app(models=["tiny-random-base"])
    with serve_in_thread(reopened) as url:
        service = reopened.state.services.jobs
        wait_for(lambda: service.get(job_id).status.finished)
        assert service.get(job_id).status is JobStatus.SUCCEEDED
        assert service.get(job_id).attempts == 2
