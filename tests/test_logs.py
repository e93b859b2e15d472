"""JSON logs: one object per line during a real job, with request, job and key ids, and none of the
secrets (the key, the prompt, the webhook's token) or image data."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fluxserve.telemetry import context
from fluxserve.telemetry.logs import JsonFormatter, TextFormatter
from fluxserve.webhooks.secret import new_secret
from tests.helpers import PREFER_WAIT, wait_for
from tests.jobs_support import JOBS
from tests.webhook_receiver import Answer, Receiver

PROMPT = "a secret lighthouse at dusk, codename BLUEHERON"
TOKEN = "tok_do_not_log_4f1d9a"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record the server logs, formatted as ``log_format = "json"`` formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_ids_and_no_secrets(make_app: Callable[..., FastAPI], captured: io.StringIO) -> None:
    receiver = Receiver([Answer(500), Answer(204)])  # one retry: the sender logs it
    app = make_app(models=["tiny-random"], webhook_secret=new_secret(), webhook_retry_base_seconds=0.01)
    try:
        with TestClient(app) as client:
            key, secret = app.state.services.keys.create("alice")
            body = {
                "model": "tiny-random",
                "prompt": PROMPT,
                "size": "64x64",
                "webhook_url": f"{receiver.url}/hook?token={TOKEN}",
            }
            headers = {"Authorization": f"Bearer {secret}", "X-Request-ID": "req-test-42", **PREFER_WAIT}
            response = client.post(JOBS, json=body, headers=headers)
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == "req-test-42"
            job = response.json()
            assert job["status"] == "succeeded"
            wait_for(lambda: len(receiver.requests) >= 3, "the webhook's retry and both events")
    finally:
        receiver.close()

    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert lines
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= line.keys()
        assert set(line) <= {"timestamp", "level", "logger", "message", "request_id", "job_id", "key_id", "exception"}
    for secret_value in (secret, PROMPT, "BLUEHERON", TOKEN, app.state.services.settings.webhook_secret):
        assert secret_value not in text
    assert all(len(line["message"]) < 1000 for line in lines)  # no image data, encoded or not

    queued = [line for line in lines if line["message"] == f"job {job['id']} queued for tiny-random"]
    assert queued == [{**queued[0], "request_id": "req-test-42", "key_id": key.id}]  # said while handling the request
    worker = [line for line in lines if line["logger"] == "fluxserve.worker" and line.get("job_id") == job["id"]]
    assert worker
    assert all(line["key_id"] == key.id and "request_id" not in line for line in worker)
    assert any(line["message"].startswith(f"job {job['id']} succeeded after") for line in worker)
    retry = [line for line in lines if line["logger"] == "fluxserve.webhooks" and "retrying" in line["message"]]
    assert retry
    assert all(line["job_id"] == job["id"] for line in retry)


def test_a_request_without_an_id_gets_one_and_logs_it(make_app: Callable[..., FastAPI], captured: io.StringIO) -> None:
    with TestClient(make_app(models=["tiny-random"])) as client:
        response = client.post(JOBS, json={"model": "tiny-random", "prompt": "x", "size": "64x64"})
    assert response.status_code == 202
    made = response.headers["x-request-id"]
    assert made.startswith("req_")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert any(line.get("request_id") == made and "queued" in line["message"] for line in lines)


def test_formats_read_the_context_of_the_thread_that_logs() -> None:
    record = logging.LogRecord("fluxserve.test", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    with context.job("job_abc", "key_123"):
        line = json.loads(JsonFormatter().format(record))
        text = TextFormatter().format(record)
    assert line["message"] == "hello there"
    assert (line["level"], line["logger"], line["job_id"], line["key_id"]) == (
        "warning",
        "fluxserve.test",
        "job_abc",
        "key_123",
    )
    assert line["timestamp"].endswith("+00:00")
    assert text.endswith("hello there [job_id=job_abc key_id=key_123]")
    assert "job_id" not in JsonFormatter().format(record)  # the context ended with the block
