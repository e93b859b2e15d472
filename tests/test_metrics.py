"""Prometheus metrics at /metrics, scraped and parsed with prometheus_client's own parser after
real jobs on the tiny model (and a hosted one against the loopback fake of BFL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fluxserve.accounts.keys import Scope
from fluxserve.api.app import create_app
from fluxserve.settings import Settings
from fluxserve.telemetry.metrics import CONTENT_TYPE
from fluxserve.webhooks.secret import new_secret
from tests.fakes.bfl import FakeBfl
from tests.helpers import PREFER_WAIT, wait_for
from tests.jobs_support import JOBS, SLOW, LiveServer
from tests.servers import serve_in_thread
from tests.test_bfl import KEY as BFL_KEY
from tests.test_bfl import engine_for
from tests.webhook_receiver import Answer, Receiver

MODEL = "tiny-random"
JOB = {"model": MODEL, "prompt": "a lighthouse", "size": "256x256", "steps": 4}
MEGAPIXELS_PER_IMAGE = 256 * 256 / 1024**2  # 0.0625: exact in binary, so sums are exact too

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient | httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app(models=[MODEL])) as test_client:
        yield test_client


def run_job(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post(JOBS, json={**JOB, **fields}, headers=PREFER_WAIT)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "succeeded", job
    return job


def test_jobs_images_and_megapixels_are_counted_exactly(client: TestClient) -> None:
    for n in (1, 2, 1):
        run_job(client, n=n)
    samples = scrape(client)

    assert value(samples, "fluxserve_jobs_total", model=MODEL, status="succeeded") == 3
    assert value(samples, "fluxserve_jobs_total", model=MODEL, status="failed") == 0
    assert value(samples, "fluxserve_images_total", model=MODEL) == 4
    assert value(samples, "fluxserve_megapixels_total", model=MODEL) == 4 * MEGAPIXELS_PER_IMAGE
    assert value(samples, "fluxserve_queue_seconds_count", model=MODEL) == 3
    assert value(samples, "fluxserve_job_duration_seconds_count", model=MODEL, status="succeeded") == 3
    duration = value(samples, "fluxserve_job_duration_seconds_sum", model=MODEL, status="succeeded")
    assert duration > 0
    # Each step is timed from the end of the one before: 3 per image of 4 steps.
    assert value(samples, "fluxserve_step_seconds_count", model=MODEL) == 4 * 3
    assert 0 < value(samples, "fluxserve_step_seconds_sum", model=MODEL) < duration
    assert value(samples, "fluxserve_model_load_seconds_count", model=MODEL) == 1
    assert value(samples, "fluxserve_queue_depth", model=MODEL) == 0
    assert value(samples, "fluxserve_jobs_running", model=MODEL) == 0
    # Buckets go to several minutes: image work can wait and run that long.
    assert ("fluxserve_queue_seconds_bucket", frozenset({("model", MODEL), ("le", "600.0")})) in samples
    assert not any(name.startswith("fluxserve_device_memory") for name, _ in samples)  # no CUDA here


def test_http_requests_are_counted_by_route_template_and_status_class(client: TestClient) -> None:
    job = run_job(client)
    assert client.get(f"{JOBS}/{job['id']}").status_code == 200
    assert client.get(f"{JOBS}/job_nope").status_code == 404
    assert client.get("/no/such/page/123").status_code == 404
    assert client.post(JOBS, json={**JOB, "steps": "many"}).status_code == 400
    samples = scrape(client)

    post, get = {"method": "POST", "route": JOBS}, {"method": "GET", "route": JOBS + "/{job_id}"}
    assert value(samples, "fluxserve_http_requests_total", **post, status="2xx") == 1
    assert value(samples, "fluxserve_http_requests_total", **post, status="4xx") == 1
    assert value(samples, "fluxserve_http_requests_total", **get, status="2xx") == 1
    assert value(samples, "fluxserve_http_requests_total", **get, status="4xx") == 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "4xx"}
    assert value(samples, "fluxserve_http_requests_total", **unmatched) == 1
    routes = {dict(labels).get("route") for name, labels in samples if name == "fluxserve_http_requests_total"}
    assert not any(route and job["id"] in route for route in routes)  # never a raw path


def test_no_label_names_a_key(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(models=[MODEL])
    with TestClient(app) as client:
        key, secret = app.state.services.keys.create("alice")
        headers = {"Authorization": f"Bearer {secret}"}
        assert client.post(JOBS, json=JOB, headers={**headers, **PREFER_WAIT}).status_code == 200
        samples = scrape(client)
    key_id = key.id
    assert value(samples, "fluxserve_jobs_total", model=MODEL, status="succeeded") == 1
    for _, labels in samples:
        assert all(secret not in label and key_id not in label for _, label in labels)


def test_metrics_can_require_an_admin_key(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(models=[MODEL], metrics_require_key=True)
    with TestClient(app) as client:
        keys = app.state.services.keys
        _, admin = keys.create("ops", Scope.ADMIN)
        _, user = keys.create("alice")
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"x-key": user}).status_code == 403
        assert client.get("/metrics", headers={"x-key": admin}).status_code == 200


def test_metrics_can_be_turned_off(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(models=[MODEL], metrics=False)) as client:
        run_job(client)
        assert client.get("/metrics").status_code == 404


def test_each_app_has_its_own_registry(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(models=[MODEL])) as first, TestClient(make_app(models=[MODEL])) as second:
        run_job(first)
        assert value(scrape(first), "fluxserve_jobs_total", model=MODEL, status="succeeded") == 1
        assert value(scrape(second), "fluxserve_jobs_total", model=MODEL, status="succeeded") == 0


def test_webhook_deliveries_are_counted_by_outcome(make_server: Callable[..., LiveServer]) -> None:
    receiver = Receiver([Answer(500), Answer(204)])
    try:
        server = make_server(
            models=[MODEL], webhook_secret=new_secret(), webhook_retry_base_seconds=0.01, webhook_max_attempts=3
        )
        job = server.submit({**JOB, "webhook_url": receiver.url}, headers=PREFER_WAIT)

        def settled() -> bool:
            deliveries = server.job(job["id"])["webhook"]["deliveries"]
            return len(deliveries) == 2 and all(d["status"] == "delivered" for d in deliveries)

        wait_for(settled, "both deliveries delivered")
        samples = scrape(server.http)
    finally:
        receiver.close()
    attempts = len(receiver.requests)
    assert value(samples, "fluxserve_webhook_deliveries_total", outcome="delivered") == 2
    assert value(samples, "fluxserve_webhook_deliveries_total", outcome="retry") == attempts - 2 >= 1


def test_hosted_provider_calls_and_cost_are_counted(make_settings: Callable[..., Settings]) -> None:
    fake = FakeBfl(BFL_KEY)
    model = "bfl:flux-2-pro"
    with serve_in_thread(fake.app) as url:
        engine = engine_for(url)
        settings = make_settings(models=[model])
        try:
            with TestClient(create_app(settings, {model: engine})) as client:
                body = {"model": model, "prompt": "a lighthouse", "size": "256x256"}
                response = client.post(JOBS, json=body, headers=PREFER_WAIT)
                assert response.json()["status"] == "succeeded", response.text
                cost = response.json()["usage"]["cost_usd"]
                fake.end_next_task("Content Moderated")
                refused = client.post(JOBS, json=body, headers=PREFER_WAIT).json()
                assert refused["status"] == "failed", refused
                samples = scrape(client)
        finally:
            engine.close()
    assert refused["error"]["type"] == "moderation_blocked"
    assert value(samples, "fluxserve_provider_calls_total", provider="bfl", outcome="ok") == 1
    assert value(samples, "fluxserve_provider_calls_total", provider="bfl", outcome="moderation_blocked") == 1
    assert value(samples, "fluxserve_jobs_total", model=model, status="failed") == 1
    assert value(samples, "fluxserve_job_duration_seconds_count", model=model, status="failed") == 1
    assert value(samples, "fluxserve_provider_cost_usd_total", provider="bfl") == pytest.approx(cost)
    assert value(samples, "fluxserve_step_seconds_count", model=model) == 0  # polling is not denoising


def test_canceled_jobs_count_and_only_started_ones_have_a_duration(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(models=["tiny-random-base"])) as client:
        first, second = (client.post(JOBS, json=SLOW).json() for _ in range(2))
        for job in (second, first):  # the second waits behind the first: it is canceled in the queue
            assert client.post(f"{JOBS}/{job['id']}/cancel").status_code == 200

        def ended() -> bool:
            return all(client.get(f"{JOBS}/{job['id']}").json()["status"] == "canceled" for job in (first, second))

        wait_for(ended, "both jobs canceled")
        jobs = [client.get(f"{JOBS}/{job['id']}").json() for job in (first, second)]
        samples = scrape(client)
    assert jobs[1].get("started_at") is None
    started = sum(job.get("started_at") is not None for job in jobs)
    labels = {"model": "tiny-random-base", "status": "canceled"}
    assert value(samples, "fluxserve_jobs_total", **labels) == 2
    assert value(samples, "fluxserve_job_duration_seconds_count", **labels) == started
    assert value(samples, "fluxserve_images_total", model="tiny-random-base") == 0
