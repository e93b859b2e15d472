"""The parts of ``serve --ray`` that need no Ray: the queue-depth policy, what each deployment asks
for, the refusal of SQLite, and the ingress-only server (``run_workers = false``) over Postgres."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fluxserve.api.app import create_app
from fluxserve.cli.main import main
from fluxserve.cluster.autoscaling import LOADING, QUEUED, RUNNING, QueueDepthPolicy, desired_replicas
from fluxserve.cluster.plan import check_shared_store, deployment_name, model_deployments, replica_gpus
from fluxserve.errors import InvalidRequest
from fluxserve.settings import Settings, load_settings
from tests.helpers import PREFER_WAIT, wait_for


@dataclass(frozen=True)
class Point:  # a point of a replica's metric time series, as Ray Serve hands it to a policy
    timestamp: float
    value: float


def context(
    target: int, raw: dict[str, dict[str, list[Point]]], *, running: int | None = None, calls: float = 0
) -> SimpleNamespace:
    """What Ray Serve hands the policy: ``target`` replicas asked for, ``running`` of them up (as
    many by default), ``calls`` waiting at the deployment's handles or running on its replicas."""
    return SimpleNamespace(
        target_num_replicas=target,
        current_num_replicas=target if running is None else running,
        total_num_requests=calls,
        raw_metrics=raw,
    )


@pytest.mark.parametrize(
    ("queued", "running", "target", "replicas"),
    [(0, 0, 2, 0), (1, 0, 2, 1), (3, 1, 2, 2), (4, 1, 2, 3), (5, 2, 1, 7), (1, 0, 0.5, 2)],
)
def test_replicas_for_a_queue(queued: int, running: int, target: float, replicas: int) -> None:
    assert desired_replicas(queued, running, target) == replicas


def test_the_policy_reads_the_latest_queue_once_and_every_replicas_running_jobs() -> None:
    policy = QueueDepthPolicy(target=2)
    raw = {
        QUEUED: {"a": [Point(1, 9), Point(2, 5)], "b": [Point(2, 5)]},  # one shared queue, seen by both
        RUNNING: {"a": [Point(2, 1)], "b": [Point(2, 1)]},
    }
    assert policy(context(2, raw)) == (4, {})  # (5 waiting + 2 running) / 2 per replica


def test_the_policy_keeps_the_replicas_until_one_reports() -> None:
    assert QueueDepthPolicy(target=2)(context(3, {})) == (3, {})
    assert QueueDepthPolicy(target=2)(context(3, {QUEUED: {"a": []}})) == (3, {})


def test_a_deployment_at_zero_stays_there_until_a_call_waits_at_its_handle() -> None:
    policy = QueueDepthPolicy(target=2)
    assert policy(context(0, {})) == (0, {})  # nobody reports, nothing calls
    assert policy(context(0, {}, calls=1)) == (1, {})  # the ingress's wake() waits for a replica
    assert policy(context(0, {}, calls=3)) == (1, {})  # one replica, then the queue it reports decides
    assert policy(context(1, {}, running=0)) == (1, {})  # a replica on its way: kept until it reports


def test_the_policy_keeps_a_replica_while_one_loads_its_model() -> None:
    """The first replica of a deployment that may go to zero loads the model and publishes what it
    accepts before it goes: an idle replica that still loads is not given up."""
    policy = QueueDepthPolicy(target=2)
    loading = {QUEUED: {"a": [Point(1, 0)]}, RUNNING: {"a": [Point(1, 0)]}, LOADING: {"a": [Point(1, 1)]}}
    assert policy(context(1, loading)) == (1, {})
    loaded = {**loading, LOADING: {"a": [Point(1, 1), Point(2, 0)]}}
    assert policy(context(1, loaded)) == (0, {})  # idle and loaded: zero, after the downscale delay
    assert desired_replicas(5, 0, 2, loading=True) == 3  # the queue asks for more: loading adds none


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, database_url="postgresql://db.internal/fluxserve", **values)  # type: ignore[arg-type]


def test_a_replica_gets_a_gpu_on_cuda_and_none_on_cpu_or_for_a_hosted_model(tmp_path: Path) -> None:
    runtime = {"flux.2-dev": {"device": "cuda:1"}, "tiny-random": {"device": "cpu"}}
    served = settings(
        tmp_path, models=["flux.2-dev", "tiny-random", "bfl:flux-2-pro", "flux.2-klein-4b"], runtime=runtime
    )
    assert [replica_gpus(served, model, cluster_gpus=8) for model in served.models] == [1, 0, 0, 1]
    assert replica_gpus(served, "flux.2-klein-4b", cluster_gpus=0) == 0  # the default device on a CPU cluster
    plans = model_deployments(settings(tmp_path, models=["tiny-random"], ray_num_cpus=2), cluster_gpus=0)
    assert [(p.name, p.num_gpus, p.num_cpus) for p in plans] == [("model-tiny-random", 0, 2)]


def test_deployment_names_keep_only_safe_characters() -> None:
    assert deployment_name("/models/my flux") == "model-_models_my_flux"
    assert deployment_name("black-forest-labs/FLUX.2-dev") == "model-black-forest-labs_FLUX.2-dev"


def test_replica_bounds_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"^setting ray_min_replicas: 3 is more than ray_max_replicas \(2\)$"):
        load_settings({"data_dir": tmp_path, "ray_min_replicas": 3, "ray_max_replicas": 2}, environ={})


def test_ray_needs_a_shared_postgres_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidRequest, match="Postgres database_url"):
        check_shared_store(Settings(data_dir=tmp_path))
    assert main(["serve", "--ray", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fluxserve: error: serve --ray needs a Postgres database_url")
    assert err.count("\n") == 1


@pytest.mark.parametrize("module", ["fluxserve.cli.main", "fluxserve.api.app", "fluxserve.cluster.plan"])
def test_ray_is_imported_only_where_it_is_used(module: str) -> None:
    script = f"import sys, {module}; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "False"


def test_an_ingress_only_server_refuses_sqlite(make_app: Callable[..., FastAPI]) -> None:
    with pytest.raises(InvalidRequest, match="run_workers = false needs a database_url"):
        make_app(run_workers=False)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_ingress_only_server_queues_for_workers_elsewhere(make_app: Callable[..., FastAPI]) -> None:
    """No model has loaded anywhere: 503 and not ready. Once a server with workers on the same
    database has loaded it (and published what it accepts), the ingress validates against that,
    and the worker there runs the job the ingress queued."""
    job = {"model": "tiny-random", "prompt": "queued at the ingress", "size": "64x64", "seed": 1}
    with TestClient(make_app(run_workers=False)) as ingress:
        refused = ingress.post("/v1/jobs", json=job)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "no replica of model tiny-random has loaded it yet" in refused.json()["error"]["message"]
        assert ingress.get("/ready").status_code == 503
        assert ingress.get("/v1/models/tiny-random").json()["status"] == "loading"
        with TestClient(make_app()) as _worker:
            wait_for(lambda: ingress.get("/ready").status_code == 200, "the ingress ready once the model loaded")
            assert ingress.post("/v1/jobs", json={**job, "steps": 9}).status_code == 400  # klein: 4 steps, always
            done = ingress.post("/v1/jobs", json=job, headers=PREFER_WAIT)
            assert done.status_code == 200, done.text
            assert done.json()["status"] == "succeeded"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_ingress_knows_a_hosted_models_capabilities_at_once(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(run_workers=False, models=["tiny-random", "cf:flux-2-dev"]))
    with TestClient(app) as ingress:
        states = {card["id"]: card["status"] for card in ingress.get("/v1/models").json()["data"]}
        assert states == {"tiny-random": "loading", "cf:flux-2-dev": "ready"}
