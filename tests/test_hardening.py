"""Hardening (issue 5): what browsers may do, what every response carries, and what neither clients
nor the log at its default level ever see: local paths, stack traces, prompts, keys, webhook tokens.

Covered elsewhere, not repeated here: bodies and uploads over the limits are 413 in the error shape
(tests/test_api_bad_input.py, test_a_body_over_the_limit_is_413_by_content_length and the two after
it); /health's body is exactly {"status": "ok"} (tests/test_api_images.py,
test_health_is_public_and_says_little).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fluxserve.api.app import create_app
from fluxserve.api.headers import DATA_POLICY
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from tests.helpers import wait_for
from tests.webhook_receiver import Answer, Receiver

GENERATIONS = "/v1/images/generations"
STUDIO = "https://studio.example"
ELSEWHERE = "https://elsewhere.example"
PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "authorization, x-key"}
SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secure(response: Any, *, csp: bool = True) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert ("content-security-policy" in response.headers) is csp


# -- CORS ------------------------------------------------------------------------------------


def test_no_cors_by_default(client: TestClient) -> None:
    simple = client.get("/v1/models", headers={"origin": STUDIO})
    assert simple.status_code == 200
    assert not any(name.startswith("access-control-") for name in simple.headers)
    preflight = client.options(GENERATIONS, headers={"origin": STUDIO, **PREFLIGHT})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-headers" not in preflight.headers


@pytest.fixture
def studio_client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app(cors_origins=[STUDIO])) as client:
        yield client


def test_an_allowed_origin_may_call_with_a_key(studio_client: TestClient) -> None:
    simple = studio_client.get("/v1/models", headers={"origin": STUDIO})
    assert simple.headers["access-control-allow-origin"] == STUDIO
    assert "x-request-id" in simple.headers["access-control-expose-headers"]
    preflight = studio_client.options(GENERATIONS, headers={"origin": STUDIO, **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == STUDIO
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-key"} <= allowed
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_another_origin_gets_no_cors_headers(studio_client: TestClient) -> None:
    simple = studio_client.get("/v1/models", headers={"origin": ELSEWHERE})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    preflight = studio_client.options(GENERATIONS, headers={"origin": ELSEWHERE, **PREFLIGHT})
    assert preflight.status_code >= 400
    assert "access-control-allow-origin" not in preflight.headers


# -- security headers ------------------------------------------------------------------------


def test_security_headers_on_api_responses_and_image_files(client: TestClient) -> None:
    models = client.get("/v1/models")
    assert_secure(models)
    assert models.headers["content-security-policy"] == DATA_POLICY
    assert_secure(client.get("/v1/jobs/job_nonexistent"))  # an error answered by our handlers
    body = {"prompt": "a lighthouse", "size": "64x64", "response_format": "url"}
    generated = client.post(GENERATIONS, json=body)
    assert generated.status_code == 200, generated.text
    assert_secure(generated)
    image = client.get(generated.json()["data"][0]["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert_secure(image)
    assert image.headers["content-security-policy"] == DATA_POLICY


def test_a_413_answered_by_the_body_limit_has_them_too(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(max_body_mb=0.01)) as client:
        refused = client.post(GENERATIONS, json={"prompt": "x" * 20_000})
    assert refused.status_code == 413
    assert_secure(refused)


def test_the_docs_keep_nosniff_but_no_policy_that_would_block_swagger_ui(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert_secure(docs, csp=False)


# -- errors say nothing of the server's insides ---------------------------------------------


def test_an_unexpected_exception_is_a_bare_500(
    make_app: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()

    async def broken() -> None:
        raise RuntimeError("cannot open /srv/fluxserve/private/state.db with password hunter2")

    app.add_api_route("/broken", broken)
    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken")
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "internal error; see the server log",
            "type": "server_error",
            "param": None,
            "code": "internal",
        }
    }
    for inside in ("/srv", "hunter2", "RuntimeError", "Traceback"):
        assert inside not in response.text
    assert response.headers["x-request-id"].startswith("req_")
    assert_secure(response)  # answered outside our middleware, so the handler adds them itself
    assert "hunter2" in caplog.text  # the operator still learns what happened


def test_ready_names_no_model_while_loading(make_settings: Callable[..., Any], options: EngineOptions) -> None:
    name = "tiny-random"
    app = create_app(make_settings(models=[name]), {name: DiffusersEngine(name, options)})
    try:
        client = TestClient(app)  # no lifespan: the worker never starts, the model stays loading
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert name not in response.text
        assert response.json()["error"]["code"] == "engine_not_ready"
    finally:
        app.state.services.db.close()


MISSING = "acme/not-in-this-cache"
"""Served by name; its weights are not in the Hugging Face cache and downloads are off."""


def test_a_model_that_fails_to_load_shows_clients_no_path(
    make_settings: Callable[..., Any],
    engines: dict[str, DiffusersEngine],
    options: EngineOptions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The load error names the cache it looked in: a local path, here one the test can look for.
    hub_cache = str(tmp_path / "private-hf-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hub_cache)
    settings = make_settings(models=[MISSING])
    # A first server, whose weights for the name were there, stops with a job still waiting.
    with TestClient(create_app(settings, {MISSING: engines["tiny-random-base"]})) as first:
        blocker = first.post("/v1/jobs", json={"prompt": "blocker", "size": "512x512", "steps": 100})
        assert blocker.status_code == 202, blocker.text
        waiting = first.post("/v1/jobs", json={"prompt": "waits", "size": "64x64", "steps": 3}).json()
        assert first.get(f"/v1/jobs/{waiting['id']}").json()["status"] == "queued"
    # The next start cannot load the model: the waiting job fails.
    broken = DiffusersEngine(MISSING, options)
    with caplog.at_level(logging.INFO), TestClient(create_app(settings, {MISSING: broken})) as client:
        wait_for(lambda: client.get(f"/v1/jobs/{waiting['id']}").json()["status"] == "failed", "the job failed")
        job = client.get(f"/v1/jobs/{waiting['id']}")
        error = job.json()["error"]
        assert error["type"] == "model_unavailable"
        assert hub_cache not in error["message"]
        assert error["message"] == f"model {MISSING} could not be loaded; the server's log says why"
        events = client.get(f"/v1/jobs/{waiting['id']}/events")  # the stream of a finished job
        models = client.get("/v1/models")
        assert models.json()["data"][0]["status"] == "failed"
        one_model = client.get(f"/v1/models/{MISSING}")
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert MISSING not in ready.text
        images = client.post(GENERATIONS, json={"model": MISSING, "prompt": "a fox", "size": "64x64"})
        assert images.status_code == 503
        assert images.json()["error"]["code"] == "model_unavailable"
        listed = client.get("/v1/jobs")
    for response in (job, events, models, one_model, ready, images, listed):
        assert response.text, response.url
        assert hub_cache not in response.text, (response.url, response.text)
        assert "Hugging Face cache" not in response.text, (response.url, response.text)
    load_failure = [r for r in caplog.records if r.name == "fluxserve.worker" and r.levelno >= logging.ERROR]
    assert load_failure
    assert hub_cache in load_failure[0].getMessage()  # the operator learns why


# -- the log at INFO -------------------------------------------------------------------------


def test_the_log_at_info_has_no_prompt_key_or_webhook_token(
    make_app: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    prompt = "a periwinkle axolotl juggling seventeen teacups"
    token = "tok-" + "7f3a9c1e5b2d4086"
    receiver = Receiver([Answer(503)])  # answers, then fails: httpx logs the request, we log the retry
    try:
        app = make_app(webhook_max_attempts=2, webhook_retry_base_seconds=0.01)
        with caplog.at_level(logging.INFO), TestClient(app) as client:
            _, secret = app.state.services.keys.create("t")
            auth = {"Authorization": f"Bearer {secret}"}
            assert client.get("/v1/models").status_code == 401  # the key is what lets the calls in
            body = {"prompt": prompt, "size": "64x64", "webhook_url": f"{receiver.url}?token={token}"}
            generated = client.post(GENERATIONS, json=body, headers=auth)
            assert generated.status_code == 200, generated.text
            job_id = generated.headers["x-job-id"]

            def delivery_failed() -> bool:
                deliveries = client.get(f"/v1/jobs/{job_id}", headers=auth).json()["webhook"]["deliveries"]
                return bool(deliveries) and all(d["status"] == "failed" for d in deliveries)

            wait_for(delivery_failed, "the webhook delivery failed")
    finally:
        receiver.close()
    assert len(receiver.requests) >= 2  # the attempts were made, with the token
    logged = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records if r.levelno >= logging.INFO)
    for leaked in (prompt, "axolotl", secret, secret[12:], token, "/hooks"):
        assert leaked not in logged, leaked
    receiver_origin = receiver.url.removesuffix("/hooks")
    assert f"to {receiver_origin}: HTTP 503; retrying" in logged  # our own lines name only the origin
    assert f"POST {receiver_origin} " in logged  # so does httpx's line for each attempt
