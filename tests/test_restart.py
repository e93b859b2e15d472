"""kill -9 with jobs queued and running: after a restart every accepted job finishes, once (SQLite and Postgres)."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxserve.engines.diffusers_engine import DiffusersEngine
from tests.helpers import TEST_TIMEOUT, wait_for
from tests.postgres_support import BOTH_DATABASES, stored_jobs
from tests.servers import ServerProcess

pytestmark = [pytest.mark.slow, BOTH_DATABASES]

SLOW = {"model": "tiny-random-base", "size": "256x256", "steps": 100, "response_format": "url"}


def post_in_background(url: str, body: dict[str, Any]) -> threading.Thread:
    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server is killed under it: expected
            httpx.post(url + "/v1/images/generations", json=body, timeout=TEST_TIMEOUT)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_kill_9_loses_no_accepted_job_and_repeats_no_finished_one(
    tmp_path: Path, cache_dir: Path, engines: dict[str, DiffusersEngine], database_url: str | None
) -> None:
    data_dir = tmp_path / "data"

    def statuses() -> dict[str, dict[str, Any]]:
        return stored_jobs(data_dir, database_url, "id, status, attempts, spec")

    server = ServerProcess(data_dir, cache_dir, ["tiny-random-base"], database_url=database_url)
    try:
        server.wait_ready()
        done = httpx.post(
            server.url + "/v1/images/generations", json={**SLOW, "prompt": "before", "steps": 2}, timeout=TEST_TIMEOUT
        ).json()
        done_file = data_dir / "outputs" / done["id"] / "0.png"
        done_mtime = done_file.stat().st_mtime_ns

        threads = [post_in_background(server.url, {**SLOW, "prompt": f"job {i}", "seed": i}) for i in range(4)]
        wait_for(lambda: len(statuses()) == 5, "all four accepted")
        wait_for(lambda: any(job["status"] == "running" for job in statuses().values()), "one running")
        server.kill()
        for thread in threads:
            thread.join(TEST_TIMEOUT)
    finally:
        server.stop()

    before = statuses()
    assert len(before) == 5
    interrupted = [job_id for job_id, job in before.items() if job["status"] == "running"]
    assert len(interrupted) == 1
    assert sum(job["status"] == "queued" for job in before.values()) >= 2

    restarted = ServerProcess(data_dir, cache_dir, ["tiny-random-base"], database_url=database_url)
    try:
        restarted.wait_ready()
        wait_for(
            lambda: all(job["status"] == "succeeded" for job in statuses().values()),
            "every job succeeded",
            timeout=TEST_TIMEOUT * 2,  # four slow jobs, one after another
        )
        after = statuses()
        assert set(after) == set(before)
        assert after[done["id"]]["attempts"] == 1
        assert done_file.stat().st_mtime_ns == done_mtime  # a finished job is not run again
        assert after[interrupted[0]]["attempts"] == 2

        jobs = {job_id: httpx.get(f"{restarted.url}/v1/jobs/{job_id}", timeout=TEST_TIMEOUT).json() for job_id in after}
        urls = {job_id: job["images"][0]["url"] for job_id, job in jobs.items()}
        for url in urls.values():
            assert httpx.get(url, timeout=TEST_TIMEOUT).status_code == 200
        # The interrupted job ran again from its recorded seed: the same image as a fresh request.
        spec = json.loads(after[interrupted[0]]["spec"])
        fresh = httpx.post(
            restarted.url + "/v1/images/generations",
            json={**SLOW, "prompt": spec["prompt"], "seed": spec["seed"]},
            timeout=TEST_TIMEOUT,
        ).json()
        fresh_bytes = httpx.get(fresh["data"][0]["url"], timeout=TEST_TIMEOUT).content
        assert httpx.get(urls[interrupted[0]], timeout=TEST_TIMEOUT).content == fresh_bytes
    finally:
        restarted.stop()
