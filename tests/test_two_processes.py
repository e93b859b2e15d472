"""Two `fluxserve serve` processes on one Postgres database and one data folder: they share the
queue, the jobs and the jobs' events, so a client may talk to either about any job.

Which process's worker runs a job is read from the job's ``worker`` column (``host/pid/model/...``);
a process whose worker is busy with a long job leaves the next one to the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from fluxserve.engines.diffusers_engine import DiffusersEngine
from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, wait_for
from tests.postgres_support import Cluster, fetch_all
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

MODEL = "tiny-random-base"
LONG = {"model": MODEL, "prompt": "long", "size": "768x768", "steps": 100}
"""Runs until it is canceled, for the purposes of these tests."""
QUICK = {"model": MODEL, "prompt": "quick", "size": "64x64", "steps": 5}
SETTINGS = {
    "FLUXSERVE_LEASE_SECONDS": "3",
    "FLUXSERVE_QUEUE_POLL_SECONDS": "0.2",
    "FLUXSERVE_SSE_KEEPALIVE_SECONDS": str(TEST_TIMEOUT * 2),
}
"""A cancel sent to the other process is seen within a second (a third of the lease); a stream that
stays silent for TEST_TIMEOUT fails the read (the client's timeout) instead of being kept open."""


class Server:
    """One of the processes, with a client."""

    def __init__(self, process: ServerProcess, database_url: str) -> None:
        self.process, self.database_url = process, database_url
        self.url = process.url
        self.http = httpx.Client(base_url=process.url, timeout=TEST_TIMEOUT)

    def submit(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json=body, **kwargs)
        assert response.status_code in (200, 202), response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def runs(self, job_id: str) -> bool:
        """Whether this process's worker holds (or held last) the job."""
        [row] = fetch_all(self.database_url, "SELECT worker FROM jobs WHERE id = %s", (job_id,))
        return row["worker"] is not None and row["worker"].split("/")[1] == str(self.process.process.pid)

    def cancel(self, job_id: str) -> None:
        response = self.http.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code in (200, 202, 409), response.text


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
    cache_dir: Path,
    engines: dict[str, DiffusersEngine],  # the tiny models, built in the cache once
    postgres_cluster: Cluster,
) -> Iterator[tuple[Server, Server]]:
    url = postgres_cluster.create_database()
    data_dir = tmp_path_factory.mktemp("two-processes") / "data"
    started: list[Server] = []
    try:
        for _ in range(2):  # one after the other: the first makes the data folder's secrets, the second reads them
            process = ServerProcess(data_dir, cache_dir, [MODEL], extra_env=SETTINGS, database_url=url)
            started.append(Server(process, url))
            process.wait_ready()
        yield started[0], started[1]
    finally:
        for server in started:
            server.http.close()
            server.process.stop()


@contextlib.contextmanager
def busy(server: Server, other: Server) -> Iterator[tuple[Server, Server]]:
    """Keep one process's worker busy with a long job; yield (the busy one, the free one)."""
    blocker = server.submit(LONG)
    try:
        wait_for(lambda: server.job(blocker["id"])["status"] == "running", "the long job running")
        yield (server, other) if server.runs(blocker["id"]) else (other, server)
    finally:
        other.cancel(blocker["id"])  # through the other process, whichever runs it


def events_of(
    server: Server,
    job_id: str,
    last_event_id: str | None = None,
    until: Callable[[ServerSentEvent], bool] | None = None,
    on_event: Callable[[ServerSentEvent], None] | None = None,
) -> list[ServerSentEvent]:
    """A job's events from ``server``, until the stream ends or ``until`` says stop."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    received: list[ServerSentEvent] = []
    with connect_sse(server.http, "GET", f"/v1/jobs/{job_id}/events", headers=headers) as source:
        for event in source.iter_sse():
            received.append(event)
            if on_event is not None:
                on_event(event)
            if until is not None and until(event):
                break
    return received


def test_a_job_is_watched_and_fetched_through_the_process_that_neither_took_nor_ran_it(
    servers: tuple[Server, Server],
) -> None:
    with busy(*servers) as (watcher, runner):
        blocker = runner.submit(LONG)  # the runner's worker takes it: the watcher's is busy
        wait_for(lambda: runner.job(blocker["id"])["status"] == "running", "the runner busy too")
        assert runner.runs(blocker["id"])
        job = runner.submit(QUICK)  # it waits while the watcher connects
        canceled: list[str] = []

        def on_event(event: ServerSentEvent) -> None:
            if not canceled:  # watching: free the runner's worker for it
                canceled.append(blocker["id"])
                watcher.cancel(blocker["id"])

        received = events_of(watcher, job["id"], on_event=on_event)

    assert runner.runs(job["id"])
    kinds = [event.event for event in received]
    assert kinds[0] == "queued"
    assert kinds[kinds.index("started") :] == ["started"] + ["progress"] * 5 + ["completed"]
    steps = [event.json()["step"] for event in received if event.event == "progress"]
    assert steps == [1, 2, 3, 4, 5]
    assert received[-1].json()["status"] == "succeeded"

    fetched = watcher.job(job["id"])
    assert fetched["status"] == "succeeded"
    image = watcher.http.get(fetched["images"][0]["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"


def test_a_client_resumes_on_the_other_process_without_gaps_or_repeats(servers: tuple[Server, Server]) -> None:
    first, second = servers
    job = first.submit({**QUICK, "size": "256x256", "steps": 40})

    def past(step: int) -> Callable[[ServerSentEvent], bool]:
        return lambda event: event.event == "progress" and event.json()["step"] >= step

    on_first = events_of(first, job["id"], until=past(3))
    on_second = events_of(second, job["id"], last_event_id=on_first[-1].id, until=past(6))
    back_on_first = events_of(first, job["id"], last_event_id=on_second[-1].id)

    received = on_first + on_second + back_on_first
    assert received[-1].event == "completed"
    ids = [int(event.id) for event in received if event.id]
    assert ids == sorted(set(ids))  # in order, nothing twice
    steps = [event.json()["step"] for event in received if event.event == "progress"]
    assert steps == list(range(steps[0], 41))  # nothing missed from the first step seen
    assert on_second[0].event == "progress"  # resumed, not described afresh
    assert back_on_first[0].event == "progress"


def test_prefer_wait_returns_a_job_the_other_process_ran_and_a_cancel_reaches_it(
    servers: tuple[Server, Server],
) -> None:
    with busy(*servers) as (taker, runner):
        done = taker.submit(QUICK, headers=PREFER_WAIT)
        assert done["status"] == "succeeded"
        assert runner.runs(done["id"])

        long = taker.submit(LONG)
        wait_for(lambda: taker.job(long["id"])["status"] == "running", "the job running on the other process")
        assert runner.runs(long["id"])
        response = taker.http.post(f"/v1/jobs/{long['id']}/cancel")
        assert response.status_code in (200, 202), response.text
        wait_for(lambda: taker.job(long["id"])["status"] == "canceled", "the job canceled by the process running it")
        assert runner.job(long["id"])["status"] == "canceled"
