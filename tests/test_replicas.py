"""Two fluxserve processes on one Postgres database and one shared data folder, as two replicas
would run: a kill -9 of the one running a job hands the job to the other once its lease runs
out; it runs there once more and its watchers on the other see it complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxserve.engines.diffusers_engine import DiffusersEngine
from tests.helpers import TEST_TIMEOUT, wait_for
from tests.postgres_support import Cluster, stored_jobs
from tests.servers import LEASE_SECONDS, ServerProcess
from tests.test_jobs_restart import Watcher

pytestmark = pytest.mark.slow

BASE = "tiny-random-base"
LONG = {"model": BASE, "prompt": "interrupted", "size": "768x768", "steps": 100, "seed": 7}
"""About 7 s on an idle laptop CPU: still running when its replica is killed."""


def test_a_killed_replicas_job_finishes_on_the_other_once_its_lease_runs_out(
    tmp_path: Path, cache_dir: Path, engines: dict[str, DiffusersEngine], postgres_cluster: Cluster
) -> None:
    url = postgres_cluster.create_database()
    data_dir = tmp_path / "data"  # one folder for both, as a shared filesystem would be
    servers = [ServerProcess(data_dir, cache_dir, [BASE], database_url=url) for _ in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        with httpx.Client(base_url=servers[0].url, timeout=TEST_TIMEOUT) as http:
            job_id = http.post("/v1/jobs", json=LONG).json()["id"]

            def stepped() -> bool:
                found: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
                assert found["status"] in ("queued", "running"), found
                return "progress" in found

            wait_for(stepped, "the job running, with progress")
        # Whichever replica claimed it holds it; the other watches, then runs it.
        holder_pid = int(stored_jobs(data_dir, url, "id, worker")[job_id]["worker"].split("/")[1])
        holder, other = sorted(servers, key=lambda server: server.process.pid != holder_pid)
        watcher = Watcher(f"{other.url}/v1/jobs/{job_id}/events")
        wait_for(lambda: watcher.types()[:1] == ["started"], "the other replica's watcher connected")
        holder.kill()

        with httpx.Client(base_url=other.url, timeout=TEST_TIMEOUT) as http:
            # The lease runs out LEASE_SECONDS after the kill at most; then the other runs the job.
            wait_for(
                lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded",
                "the job done on the other replica",
                timeout=TEST_TIMEOUT * 2 + LEASE_SECONDS,
            )
            done = http.get(f"/v1/jobs/{job_id}").json()
            image = http.get(done["images"][0]["url"])
            assert image.status_code == 200
            assert image.headers["content-type"] == "image/png"
        watcher.finish()
        assert watcher.types()[-1] == "completed"
        assert watcher.types().count("completed") == 1
        row = stored_jobs(data_dir, url, "id, status, attempts, worker")[job_id]
        assert (row["status"], row["attempts"]) == ("succeeded", 2)  # once on each replica, never at once
        assert row["worker"].split("/")[1] == str(other.process.pid)
    finally:
        for server in servers:
            server.stop()
