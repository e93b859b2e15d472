"""kill -9 of a server with jobs in every state: after a restart every job is finished, or queued
again and then finished once; watchers that reconnect with Last-Event-ID resume.

Three server processes on one data folder and port, as an operator would run them:

1. serves tiny-random; one of its jobs is running and one waits behind it. kill -9.
2. serves tiny-random-base instead: the two tiny-random jobs fail (model_not_found) at start. Then
   jobs in every state: succeeded, canceled while queued, canceled while running, running, queued;
   watchers on the running job and on a queued one. kill -9.
3. serves tiny-random-base again: the interrupted and queued jobs run, once; the finished ones
   stay as they were; the watchers reconnect and follow their jobs to ``completed``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from fluxserve.engines.diffusers_engine import DiffusersEngine
from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, unsigned, wait_for
from tests.postgres_support import stored_jobs
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow
# SQLite's rules: the server owns its file, so at each start every unfinished job is its own. On
# Postgres a restart leaves the jobs other processes hold to their leases: tests/test_replicas.py.

BASE, KLEIN = "tiny-random-base", "tiny-random"
TIMEOUT = TEST_TIMEOUT * 3
"""The bound on every wait for jobs and streams: three processes each build and run models."""

# On an idle laptop CPU: the interrupted job about 1 s, the blocker (canceled while running) about 7 s,
# the tiny-random one (killed while running) about 4 s, the others a fraction of a second.
RUNNING = {"model": BASE, "prompt": "interrupted", "size": "256x256", "steps": 100, "seed": 7}
BLOCKER = {"model": BASE, "prompt": "blocker", "size": "768x768", "steps": 100}
QUEUED = {"model": BASE, "prompt": "queued", "size": "64x64", "steps": 10}
QUICK = {"model": BASE, "prompt": "done before the kill", "size": "64x64", "steps": 3}
GONE = {"model": KLEIN, "prompt": "its model goes away", "size": "1024x1024", "n": 3}

LIFECYCLE = {"queued": 0, "started": 1, "progress": 2, "completed": 3}


class Watcher(threading.Thread):
    """One SSE connection to a job's events, as an EventSource makes it, read on a thread.

    Connection refusals are retried (the server is starting); the stream is read until it ends,
    or breaks because the server was killed.
    """

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.last_event_id = url, last_event_id
        self.events: list[ServerSentEvent] = []
        self.status_code: int | None = None
        self.broken: httpx.TransportError | None = None
        self.start()

    def run(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        with httpx.Client(timeout=TEST_TIMEOUT) as client:
            while True:
                headers = {} if self.last_event_id is None else {"Last-Event-ID": self.last_event_id}
                try:
                    with connect_sse(client, "GET", self.url, headers=headers) as source:
                        self.status_code = source.response.status_code
                        if self.status_code == 200:
                            for event in source.iter_sse():
                                if event.event != "message":  # "message": only the opening retry: field
                                    self.events.append(event)
                    return
                except httpx.ConnectError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
                except httpx.TransportError as error:  # the server was killed under it
                    self.broken = error
                    return

    def types(self) -> list[str]:
        return [event.event for event in self.events]

    def last_id(self) -> str:
        """The id an EventSource would send on reconnecting: the last one the stream gave."""
        return next((event.id for event in reversed(self.events) if event.id), "")

    def finish(self) -> None:
        self.join(TIMEOUT)
        assert not self.is_alive(), f"the stream of {self.url} did not end"


def ids_of(events: list[ServerSentEvent], boot: int) -> list[int]:
    """The sequence numbers of the events' ids; every id must be from server start ``boot``.

    ``end`` marks a terminal event that describes a finished job: it has no number.
    """
    ids = [event.id for event in events if event.id and event.id != "end"]
    assert all(event_id.startswith(f"{boot}-") for event_id in ids), ids
    return [int(event_id.partition("-")[2]) for event_id in ids]


def check_resumed(watcher: Watcher, boot: int, job_id: str) -> dict[str, Any]:
    """A reconnected watcher got where the job stood, then live events up to ``completed`` (once)."""
    watcher.finish()
    assert watcher.status_code == 200
    assert watcher.broken is None
    types = watcher.types()
    assert types[-1] == "completed", types
    assert types.count("completed") == 1, types
    assert types.count("started") <= 1, types
    ranks = [LIFECYCLE[kind] for kind in types]  # also: nothing failed or was canceled
    assert ranks == sorted(ranks), types
    numbers = ids_of(watcher.events, boot)  # nothing replayed from the killed process
    assert numbers == sorted(set(numbers)), numbers
    steps = [event.json()["step"] for event in watcher.events if event.event == "progress"]
    assert steps == sorted(steps)
    assert all(event.json()["job_id"] == job_id for event in watcher.events[:-1])
    completed: dict[str, Any] = watcher.events[-1].json()
    assert completed["id"] == job_id
    assert completed["status"] == "succeeded"
    return completed


def submit(http: httpx.Client, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=body, **kwargs)
    assert response.status_code in (200, 202), response.text
    job: dict[str, Any] = response.json()
    return job


def job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait_progress(http: httpx.Client, job_id: str) -> None:
    """Until the job is running and has done a step; fails if it finishes first."""

    def stepped() -> bool:
        found = job(http, job_id)
        assert found["status"] in ("queued", "running"), found
        return "progress" in found

    wait_for(stepped, f"{job_id} running, with progress", timeout=TIMEOUT)


def test_kill_9_with_jobs_in_every_state(tmp_path: Path, cache_dir: Path, engines: dict[str, DiffusersEngine]) -> None:
    data_dir = tmp_path / "data"
    database_url = None

    def rows() -> dict[str, dict[str, Any]]:
        """Every job as stored, read straight from the database."""
        return stored_jobs(data_dir, database_url)

    outputs = data_dir / "outputs"
    servers: list[ServerProcess] = []

    def serve(*models: str, port: int | None = None) -> ServerProcess:
        servers.append(ServerProcess(data_dir, cache_dir, list(models), port=port, database_url=database_url))
        return servers[-1]

    try:
        # 1. A tiny-random job running and one queued behind it, then kill -9. (One model per
        # process: two load at once on two worker threads, and that can fail.)
        first = serve(KLEIN)
        port = first.port
        first.wait_ready()
        with httpx.Client(base_url=first.url, timeout=TEST_TIMEOUT) as http:
            gone_running = submit(http, GONE)["id"]
            gone_queued = submit(http, GONE)["id"]
            gone_watcher = Watcher(f"{first.url}/v1/jobs/{gone_running}/events")
            wait_progress(http, gone_running)
            wait_for(lambda: "progress" in gone_watcher.types(), "the watcher saw progress", timeout=TIMEOUT)
        first.kill()
        gone_watcher.finish()
        assert gone_watcher.broken is not None
        assert gone_watcher.last_id().startswith("1-")
        assert {r["status"] for r in rows().values()} == {"running", "queued"}

        # 2. Restarted with tiny-random-base instead: the tiny-random jobs fail. Then jobs in every
        # state, and kill -9.
        second = serve(BASE, port=port)
        second.wait_ready()
        with httpx.Client(base_url=second.url, timeout=TEST_TIMEOUT) as http:
            for gone in (gone_running, gone_queued):
                failed = job(http, gone)
                assert failed["status"] == "failed"
                assert failed["error"]["type"] == "model_not_found"
            # The watcher of the running job reconnects: the job's current state is its end.
            resumed = Watcher(f"{second.url}/v1/jobs/{gone_running}/events", gone_watcher.last_id())
            resumed.finish()
            assert resumed.types() == ["failed"]
            assert resumed.events[0].id == "end"
            assert resumed.events[0].json()["error"]["type"] == "model_not_found"
            again = Watcher(f"{second.url}/v1/jobs/{gone_running}/events", "end")
            again.finish()
            assert again.status_code == 204

            done = submit(http, QUICK, headers=PREFER_WAIT)
            assert done["status"] == "succeeded"
            done_file = outputs / done["id"] / "0.png"
            done_stat = done_file.stat()
            done_bytes = done_file.read_bytes()

            blocker = submit(http, BLOCKER)["id"]
            running = submit(http, RUNNING)["id"]
            queued = [submit(http, {**QUEUED, "seed": seed})["id"] for seed in range(3)]
            never = submit(http, QUICK)["id"]
            canceled = http.post(f"/v1/jobs/{never}/cancel")
            assert canceled.status_code == 200
            assert canceled.json()["status"] == "canceled"

            running_watcher = Watcher(f"{second.url}/v1/jobs/{running}/events")
            queued_watcher = Watcher(f"{second.url}/v1/jobs/{queued[-1]}/events")
            wait_for(
                lambda: running_watcher.types() == queued_watcher.types() == ["queued"],
                "the watchers connected",
                timeout=TIMEOUT,
            )
            # Stopping the blocker starts the next job: the watchers hear of it.
            stopped = http.post(f"/v1/jobs/{blocker}/cancel")
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["status"] == "canceled"
            wait_progress(http, running)
            wait_for(lambda: "progress" in running_watcher.types(), "the watcher saw progress", timeout=TIMEOUT)
            wait_for(lambda: len(queued_watcher.events) == 2, "the queued watcher saw the queue move", timeout=TIMEOUT)
            assert job(http, queued[-1])["status"] == "queued"
        second.kill()

        for watcher in (running_watcher, queued_watcher):
            watcher.finish()
            assert watcher.broken is not None  # the stream was cut, not ended
        assert running_watcher.types()[:3] == ["queued", "started", "progress"]
        assert queued_watcher.types() == ["queued", "queued"]
        assert [event.json()["position"] for event in queued_watcher.events] == [4, 3]
        ids_of(running_watcher.events + queued_watcher.events, boot=2)

        # As the kill left them, in the database.
        before = rows()
        states = {job_id: (row["status"], row["attempts"]) for job_id, row in before.items()}
        expected_before = {
            gone_running: ("failed", 1),
            gone_queued: ("failed", 0),
            done["id"]: ("succeeded", 1),
            blocker: ("canceled", 1),
            never: ("canceled", 0),
            running: ("running", 1),
            **{job_id: ("queued", 0) for job_id in queued},
        }
        assert states == expected_before
        finished = [gone_running, gone_queued, done["id"], blocker, never]
        unfinished = [running, *queued]

        # 3. Restart on the same port; the watchers reconnect as soon as it listens, with the last id.
        third = serve(BASE, port=port)
        running_again = Watcher(f"{third.url}/v1/jobs/{running}/events", running_watcher.last_id())
        queued_again = Watcher(f"{third.url}/v1/jobs/{queued[-1]}/events", queued_watcher.last_id())
        third.wait_ready()
        wait_for(
            lambda: all(row["status"] == "succeeded" for row in rows().values() if row["id"] in unfinished),
            "the interrupted and queued jobs succeeded",
            timeout=TIMEOUT,
        )
        after = rows()
        assert set(after) == set(before)
        for job_id in finished:  # not touched, not run again
            assert after[job_id] == before[job_id]
        assert after[running]["attempts"] == 2  # interrupted, then run again
        assert all(after[job_id]["attempts"] == 1 for job_id in queued)  # run once
        assert done_file.stat().st_mtime_ns == done_stat.st_mtime_ns
        assert done_file.read_bytes() == done_bytes
        assert not (outputs / never).exists()
        assert not (outputs / blocker).exists()
        assert after[never]["started_at"] is None

        # The queued job's watcher reconnected while it was still waiting: its state, then live events.
        resumed_queued = check_resumed(queued_again, 3, queued[-1])
        assert queued_again.types()[0] == "queued"
        assert "started" in queued_again.types()
        positions = [event.json()["position"] for event in queued_again.events if event.event == "queued"]
        assert positions == sorted(positions, reverse=True)
        assert positions[-1] >= 1
        # The interrupted job's watcher: where it stood when it reconnected (queued, or already
        # started again, or very rarely finished), then live events to the end.
        resumed_running = check_resumed(running_again, 3, running)
        assert running_again.types()[0] in ("queued", "started", "completed")

        with httpx.Client(base_url=third.url, timeout=TEST_TIMEOUT) as http:
            for job_id, completed in ((running, resumed_running), (queued[-1], resumed_queued)):
                assert unsigned(completed) == unsigned(job(http, job_id))
            for job_id in unfinished:
                view = job(http, job_id)
                assert view["status"] == "succeeded"
                assert len(view["images"]) == 1
                image = httpx.get(view["images"][0]["url"], timeout=TEST_TIMEOUT)
                assert image.status_code == 200
                assert image.content.startswith(b"\x89PNG")
            for job_id in finished:
                assert job(http, job_id)["status"] == before[job_id]["status"]

            # A watcher that has the final event is told to stop: 204, whichever id it holds.
            for watcher in (running_again, queued_again):
                for last_id in (watcher.events[-1].id, "end"):
                    assert last_id
                    events_url = f"/v1/jobs/{watcher.events[-1].json()['id']}/events"
                    assert http.get(events_url, headers={"Last-Event-ID": last_id}).status_code == 204
            # The job finished before the kill: a new watcher gets its end, one holding it gets 204.
            fresh = Watcher(f"{third.url}/v1/jobs/{done['id']}/events")
            fresh.finish()
            assert fresh.types() == ["completed"]
            assert fresh.events[0].id == "end"
            assert unsigned(fresh.events[0].json())["images"] == unsigned(done)["images"]
            ended = http.get(f"/v1/jobs/{done['id']}/events", headers={"Last-Event-ID": "end"})
            assert ended.status_code == 204
    finally:
        for server in servers:
            server.stop()
