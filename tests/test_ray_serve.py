"""fluxserve on a real local Ray cluster (CPU only): model replicas that claim jobs from one Postgres
store, behind the HTTP ingress on Ray Serve's proxy.

One Ray and one Postgres database for the module. The model is ``tiny-random-base`` (its steps
are free, so a job can be made to run long enough to be killed mid-way), one torch thread per
replica. Skipped only where the ``ray`` extra is not installed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray")  # the one reason to skip: the extra is not installed
serve = pytest.importorskip("ray.serve")

from fluxserve.cluster.deployments import APP_NAME, build_application  # noqa: E402
from fluxserve.cluster.plan import deployment_name  # noqa: E402
from fluxserve.engines.diffusers_engine import DiffusersEngine  # noqa: E402
from fluxserve.engines.loading import EngineOptions  # noqa: E402
from fluxserve.settings import Settings  # noqa: E402
from tests.helpers import MAX_WAIT, TEST_TIMEOUT, wait_for  # noqa: E402
from tests.postgres_support import Cluster, fetch_all  # noqa: E402
from tests.servers import free_port  # noqa: E402
from tests.test_jobs_restart import Watcher  # noqa: E402

pytestmark = pytest.mark.slow

MODEL = "tiny-random-base"
DEPLOYMENT = deployment_name(MODEL)
LEASE_SECONDS = 2.0
QUICK = {"model": MODEL, "prompt": "a burst", "size": "256x256", "steps": 30}
"""Longer than a replica's poll for work (0.2 s): while one replica runs a job, the other claims the next."""
LONG = {"model": MODEL, "prompt": "interrupted", "size": "768x768", "steps": 100, "seed": 7}
"""Several seconds on a CPU: still running when its replica is killed."""
SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture(scope="module")
def proxy(options: EngineOptions) -> Iterator[str]:
    """A local Ray (4 logical CPUs on this 2-core machine) with Serve's HTTP proxy on a free port."""
    DiffusersEngine(MODEL, options).load()  # built once in the cache, before replicas race to build it
    env = {
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # one torch thread per replica
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    }
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def database_url(postgres_cluster: Cluster) -> str:  # one database for the module's deployments
    return postgres_cluster.create_database()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")  # shared by every replica, as a shared filesystem would be


def deploy(url: str, data_dir: Path, cache_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": url,
        "cache_dir": cache_dir,
        "models": [MODEL],
        "warmup": False,
        "allow_download": False,
        "max_wait_seconds": MAX_WAIT,
        "lease_seconds": LEASE_SECONDS,
        "queue_poll_seconds": 0.2,
        "ray_num_cpus": 1,
        "ray_ingress_num_cpus": 0.5,
        "ray_upscale_delay_seconds": 0,
        "ray_downscale_delay_seconds": 1,
        **overrides,
    }
    settings = Settings(**values)
    serve.run(build_application(settings, cluster_gpus=0), name=APP_NAME, route_prefix="/")
    return settings


def running_replicas() -> int:
    status = serve.status().applications[APP_NAME].deployments[DEPLOYMENT]
    return int(status.replica_states.get("RUNNING", 0))


def submit(http: httpx.Client, body: dict[str, Any]) -> str:
    """Queue a job through the ingress, retrying while no replica has published the model yet (503)."""
    found: dict[str, str] = {}

    def accepted() -> bool:
        response = http.post("/v1/jobs", json=body)
        assert response.status_code in (202, 503), response.text
        if response.status_code == 202:
            found["id"] = response.json()["id"]
        return "id" in found

    wait_for(accepted, "the ingress accepting a job")
    return found["id"]


@pytest.fixture(scope="module")
def two_replicas(proxy: str, database_url: str, data_dir: Path, cache_dir: Path) -> str:
    deploy(database_url, data_dir, cache_dir, ray_min_replicas=2, ray_max_replicas=2)
    wait_for(lambda: running_replicas() == 2, "two model replicas running")
    return proxy


def test_two_replicas_share_a_burst_and_run_each_job_once(two_replicas: str, database_url: str) -> None:
    with httpx.Client(base_url=two_replicas, timeout=TEST_TIMEOUT) as http:
        ids = [submit(http, {**QUICK, "seed": seed}) for seed in range(8)]
        wait_for(
            lambda: all(http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded" for job_id in ids),
            "every job of the burst done",
            timeout=TEST_TIMEOUT * 3,
        )
        image = http.get(http.get(f"/v1/jobs/{ids[0]}").json()["images"][0]["url"])
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
    rows = {row["id"]: row for row in fetch_all(database_url, "SELECT id, attempts, worker FROM jobs")}
    assert [rows[job_id]["attempts"] for job_id in ids] == [1] * len(ids)  # each claimed once
    started = fetch_all(database_url, "SELECT job_id, count(*) AS n FROM job_events WHERE type = 'started' GROUP BY 1")
    assert {row["job_id"]: row["n"] for row in started if row["job_id"] in ids} == dict.fromkeys(ids, 1)
    processes = {rows[job_id]["worker"].split("/")[1] for job_id in ids}
    assert len(processes) == 2  # both replicas took part


def test_a_killed_replicas_job_finishes_on_the_other(two_replicas: str, database_url: str) -> None:
    with httpx.Client(base_url=two_replicas, timeout=TEST_TIMEOUT) as http:
        job_id = submit(http, LONG)

        def stepped() -> bool:
            found: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
            assert found["status"] in ("queued", "running"), found
            return "progress" in found

        wait_for(stepped, "the job running, with progress")
        watcher = Watcher(f"{two_replicas}/v1/jobs/{job_id}/events")
        wait_for(lambda: "started" in watcher.types(), "the watcher connected through the ingress")
        holder = fetch_all(database_url, "SELECT worker FROM jobs WHERE id = %s", (job_id,))[0]["worker"]
        os.kill(int(holder.split("/")[1]), signal.SIGKILL)  # the replica's process, mid-job

        wait_for(
            lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded",
            "the job done on the other replica",
            timeout=TEST_TIMEOUT * 2 + LEASE_SECONDS,
        )
    watcher.join(TEST_TIMEOUT)
    assert watcher.types()[-1] == "completed"
    assert watcher.types().count("completed") == 1
    row = fetch_all(database_url, "SELECT attempts, worker FROM jobs WHERE id = %s", (job_id,))[0]
    assert row["attempts"] == 2  # once on each replica, never at once
    assert row["worker"] != holder


def test_autoscaling_follows_the_queue_up_and_back_down(
    proxy: str, database_url: str, data_dir: Path, cache_dir: Path
) -> None:
    deploy(database_url, data_dir, cache_dir, ray_min_replicas=1, ray_max_replicas=2, ray_target_queue_per_replica=1)
    wait_for(lambda: running_replicas() == 1, "one model replica once the queue is empty")
    with httpx.Client(base_url=proxy, timeout=TEST_TIMEOUT) as http:
        ids = [submit(http, {**LONG, "size": "512x512", "steps": 60, "seed": seed}) for seed in range(4)]
        wait_for(lambda: running_replicas() == 2, "a second replica for the queue", timeout=TEST_TIMEOUT * 2)
        wait_for(
            lambda: all(http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded" for job_id in ids),
            "every queued job done",
            timeout=TEST_TIMEOUT * 4,
        )
    wait_for(lambda: running_replicas() == 1, "back to one replica once the queue is empty", timeout=TEST_TIMEOUT * 2)


def replica_states() -> dict[str, int]:
    """The model deployment's replicas per state (STARTING, RUNNING, STOPPING...), none listed at zero."""
    status = serve.status().applications[APP_NAME].deployments[DEPLOYMENT]
    return {state: count for state, count in status.replica_states.items() if count}


def test_a_deployment_at_zero_replicas_wakes_for_a_job_and_goes_back_to_zero(
    proxy: str, postgres_cluster: Cluster, cache_dir: Path, tmp_path: Path
) -> None:
    """``ray_min_replicas = 0`` on a database where no replica ever published the model: the first
    replica loads it and publishes what it accepts, then goes once idle; the ingress still accepts
    a job for the model (no 503), which wakes the deployment, runs, and the deployment goes back
    to zero."""
    url = postgres_cluster.create_database()
    deploy(url, tmp_path, cache_dir, ray_min_replicas=0, ray_max_replicas=1)
    key = f"capabilities:{MODEL}"
    wait_for(lambda: fetch_all(url, "SELECT key FROM meta WHERE key = %s", (key,)), "the first replica publishing")
    wait_for(lambda: replica_states() == {}, "no replica at all once idle", timeout=TEST_TIMEOUT * 2)

    with httpx.Client(base_url=proxy, timeout=TEST_TIMEOUT) as http:
        queued = http.post("/v1/jobs", json={**QUICK, "seed": 1})
        assert queued.status_code == 202, queued.text  # at zero replicas, from what was published
        job_id = queued.json()["id"]
        wait_for(
            lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded",
            "the job done by a replica woken for it",
            timeout=TEST_TIMEOUT * 3,
        )
    row = fetch_all(url, "SELECT attempts FROM jobs WHERE id = %s", (job_id,))[0]
    assert row["attempts"] == 1
    wait_for(lambda: replica_states() == {}, "back to no replica once idle", timeout=TEST_TIMEOUT * 2)
