"""Hostile input (issue 13): text that is not Unicode, deep or non-finite JSON, fields of the wrong
kind, and requests whose refusal must cost no decoding. Each is a 4xx in the API's error shape, the
server goes on serving, and nothing is logged as an unexpected error.
"""

from __future__ import annotations

import base64
import logging
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fluxserve.accounts.keys import KeyLimits, Period, Scope
from fluxserve.api import requests as api_requests
from fluxserve.api.app import create_app
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.jobs.models import JobSpec
from fluxserve.settings import Settings
from tests.helpers import TEST_TIMEOUT, ManualClock, photo, png_bomb, png_bytes
from tests.servers import serve_in_thread

GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
JOBS = "/v1/jobs"
ENDPOINTS = (GENERATIONS, EDITS, JOBS)
PNG = png_bytes(photo(64, 64))
B64 = base64.b64encode(PNG).decode()
STRUCTURED = {"scene": "a harbour", "subjects": [{"description": "a boat"}]}


def deep(levels: int) -> str:
    return '{"prompt": ' + '{"a": ' * levels + "1" + "}" * levels + ', "size": "64x64"}'


def raw_json(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


# name -> (request keyword arguments for httpx, expected param or None). Images are added for edits.
JSON_CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "lone surrogate in the prompt": (raw_json('{"prompt": "a\\ud800b", "size": "64x64"}'), "prompt"),
    "lone low surrogate at the end": (raw_json('{"prompt": "ab\\udfff", "size": "64x64"}'), "prompt"),
    "lone surrogate in user": (raw_json('{"prompt": "a", "user": "\\udc00", "size": "64x64"}'), "user"),
    "lone surrogate in model": (raw_json('{"prompt": "a", "model": "x\\ud800", "size": "64x64"}'), "model"),
    "lone surrogate in a structured value": (
        raw_json('{"prompt": {"scene": "\\ud83d", "subjects": [{"description": "b"}]}, "size": "64x64"}'),
        "prompt.scene",
    ),
    "lone surrogate in a structured key": (
        raw_json('{"prompt": {"scene": "a", "subjects": [{"description": "b"}], "\\ud800": 1}}'),
        "prompt",
    ),
    "lone surrogate in an unknown key": (raw_json('{"prompt": "a", "\\ud800": 1}'), None),
    "structured prompt 500 levels deep": (raw_json(deep(500)), None),
    "structured prompt 10,000 levels deep": (raw_json(deep(10_000)), None),
    "body 40 levels deep": (raw_json('{"prompt": "a", "user": ' + "[" * 40 + "]" * 40 + "}"), None),
    "NaN in a structured prompt": (
        raw_json('{"prompt": {"scene": "a", "subjects": [{"description": "b"}], "camera": {"lens": NaN}}}'),
        None,
    ),
    "Infinity in a structured prompt": (
        raw_json('{"prompt": {"scene": "a", "subjects": [{"description": "b"}], "camera": {"lens": Infinity}}}'),
        None,
    ),
    "1e400 in a structured prompt": (
        raw_json('{"prompt": {"scene": "a", "subjects": [{"description": "b"}], "camera": {"lens": 1e400}}}'),
        None,
    ),
    "a width of 5,000 digits": (raw_json('{"prompt": "a", "width": ' + "9" * 5000 + ', "height": 64}'), None),
    "a webhook url whose IDNA label does not decode": (
        {"json": {"prompt": "a", "size": "64x64", "webhook_url": "http://xn--.example/hook"}},
        "webhook_url",
    ),
    "-Infinity as guidance": (raw_json('{"prompt": "a", "guidance": -Infinity}'), None),
    "200,000 empty arrays": (raw_json('{"prompt": "a", "user": [' + "[]," * 200_000 + "[]]}"), None),
    "structured prompt with 5,000 values": (
        {"json": {"prompt": {**STRUCTURED, "extra": list(range(5000))}, "size": "64x64"}},
        "prompt",
    ),
    "structured prompt nested 9 levels": (
        {"json": {"prompt": {**STRUCTURED, "x": [[[[[[[[1]]]]]]]]}, "size": "64x64"}},
        None,
    ),
}

FORM_CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "mask as text": ({"data": {"prompt": "a", "mask": "abc"}}, "mask"),
    "mask as base64 text": ({"data": {"prompt": "a", "mask": B64}}, "mask"),
    "image text that is not base64": ({"data": {"prompt": "a", "input_image_0": "not base64!"}}, "input_image_0"),
    "image text that is a url": ({"data": {"prompt": "a", "image": "https://example.com/a.png"}}, "image"),
    "prompt as a file": (
        {"data": {"size": "64x64"}, "files": [("prompt", ("p.txt", b"a cat", "text/plain"))]},
        "prompt",
    ),
    "seed as a file": ({"data": {"prompt": "a"}, "files": [("seed", ("s.txt", b"3", "text/plain"))]}, "seed"),
    "the same numbered image twice": (
        {"data": {"prompt": "a"}, "files": [("input_image_0", ("a.png", PNG, "image/png"))] * 2},
        "input_image_0",
    ),
    "a deep JSON prompt in a form": ({"data": {"prompt": "{" + '"a": {' * 100 + "}" * 101}}, None),
    "NaN in a JSON prompt in a form": ({"data": {"prompt": '{"scene": "a", "subjects": [], "x": NaN}'}}, None),
}


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app(models=["tiny-random"])) as test_client:
        yield test_client


def with_image(path: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Edits need a reference: add one in the request's own form (unless it is raw bytes)."""
    if path != EDITS or "content" in kwargs:
        return kwargs
    if "json" in kwargs:
        return {"json": {**kwargs["json"], "images": [B64]}}
    files = list(kwargs.get("files", []))
    if not any(name in ("image", "input_image_0") for name, _ in files) and not any(
        key in ("image", "input_image_0") for key in kwargs.get("data", {})
    ):
        files.append(("image", ("a.png", PNG, "image/png")))
    return {**kwargs, "files": files}


def assert_refused(response: Any, param: str | None) -> None:
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert len(error["message"]) > 10
    if param is not None:
        assert error["param"] == param, error


def unexpected_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("fluxserve")]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("name", [*JSON_CASES, *FORM_CASES])
def test_hostile_input_is_a_4xx_and_the_server_goes_on(
    client: TestClient, caplog: pytest.LogCaptureFixture, name: str, path: str
) -> None:
    kwargs, param = JSON_CASES.get(name) or FORM_CASES[name]
    with caplog.at_level(logging.WARNING):
        assert_refused(client.post(path, **with_image(path, kwargs)), param)
        assert client.get("/v1/jobs").status_code == 200
        assert client.get("/health").json() == {"status": "ok"}
    assert unexpected_errors(caplog) == []
    assert client.app.state.services.jobs.store.recent() == []  # type: ignore[attr-defined]


def test_a_refused_surrogate_leaves_the_history_readable(client: TestClient) -> None:
    client.post(JOBS, **raw_json('{"prompt": "a\\ud800b", "size": "64x64"}'))
    assert client.post(GENERATIONS, json={"prompt": "fine", "size": "64x64"}).status_code == 200
    listed = client.get("/v1/jobs")
    assert listed.status_code == 200
    assert [job["request"]["prompt"] for job in listed.json()["data"]] == ["fine"]


def test_a_bad_stored_row_never_takes_the_history_down(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """Rows written before text was checked (a lone surrogate) are shown mended; a row that cannot be
    read at all is left out of the list, and logged."""
    store = client.app.state.services.jobs.store  # type: ignore[attr-defined]
    spec = JobSpec(
        model="tiny-random",
        operation="generation",
        prompt="a\ud800b",
        width=64,
        height=64,
        steps=4,
        guidance=None,
        seed=1,
        n=1,
        output_format="png",
        output_compression=None,
        response_format="b64_json",
    )
    store.create("job_" + "S" * 24, spec, owner=None, charged_at=time.time())
    store.create("job_" + "B" * 24, spec, owner=None, charged_at=time.time())
    client.app.state.services.db.execute("UPDATE jobs SET spec = ? WHERE id = ?", ("{not json", "job_" + "B" * 24))

    with caplog.at_level(logging.ERROR):
        listed = client.get("/v1/jobs")
    assert listed.status_code == 200, listed.text
    assert [job["request"]["prompt"] for job in listed.json()["data"]] == ["a\ufffdb"]
    assert "job_" + "B" * 24 in caplog.text
    one = client.get("/v1/jobs/job_" + "S" * 24)
    assert one.status_code == 200
    assert one.json()["request"]["prompt"] == "a\ufffdb"


# -- images as text in multipart --------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("input_image_0", B64),
        ("input_image_0", "\n".join(textwrap.wrap(B64, 76)) + "\n"),  # as the base64 tool writes it
        ("image", "data:image/png;base64," + B64),
        ("image[]", "\r\n".join(textwrap.wrap(B64, 64))),
    ],
)
def test_an_image_field_sent_as_base64_text_is_used(client: TestClient, path: str, field: str, text: str) -> None:
    response = client.post(path, data={"prompt": "a boat", "size": "64x64", field: text})
    assert response.status_code in (200, 202), response.text
    job = response.json() if path == JOBS else client.get(f"{JOBS}/{response.headers['x-job-id']}").json()
    assert job["request"]["references"] == 1


def test_base64_text_and_a_file_make_the_same_request(client: TestClient) -> None:
    """Both forms are read into the same bytes: an Idempotency-Key retry may switch between them."""
    headers = {"idempotency-key": "same-image-either-way"}
    first = client.post(JOBS, data={"prompt": "a", "size": "64x64", "input_image_0": B64}, headers=headers)
    again = client.post(
        JOBS,
        data={"prompt": "a", "size": "64x64"},
        files=[("input_image_0", ("a.png", PNG, "image/png"))],
        headers=headers,
    )
    assert first.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


# -- refusals cost no decoding ---------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The params of every reference decoded to pixels (the real decoder runs; this only counts)."""
    seen: list[str] = []
    real = api_requests.decode_image

    def counted(data: bytes, **kwargs: Any) -> Any:
        seen.append(kwargs["param"])
        return real(data, **kwargs)

    monkeypatch.setattr(api_requests, "decode_image", counted)
    return seen


BOMB = png_bomb(6000)  # 36 megapixels, a few KB: under the per-image limit


@pytest.fixture
def keyed(tmp_path: Path, cache_dir: Path, engines: dict[str, DiffusersEngine]) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**limits: Any) -> TestClient:
        settings = Settings(
            data_dir=tmp_path / f"data{len(clients)}",
            cache_dir=cache_dir,
            models=["tiny-random"],
            warmup=False,
            allow_download=False,
        )
        app = create_app(settings, {"tiny-random": engines["tiny-random"]}, clock=ManualClock(time.time()))
        _, secret = app.state.services.keys.create("alice", Scope.GENERATE, KeyLimits(**limits))
        client = TestClient(app, headers={"authorization": f"Bearer {secret}"})
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def edit(images: list[bytes], **fields: Any) -> dict[str, Any]:
    return {
        "json": {"prompt": "a", "size": "64x64", "images": [base64.b64encode(i).decode() for i in images], **fields}
    }


@pytest.mark.parametrize(
    ("images", "fields", "status"),
    [
        ([BOMB] * 10, {}, 400),  # more images than the model takes: the review's 2.6 GB request
        ([BOMB] * 3, {}, 400),  # 108 megapixels together: over max_decode_megapixels
        ([BOMB], {"steps": 7}, 400),  # a field the model refuses
        ([BOMB], {"size": "100x100"}, 400),
        ([png_bytes(photo(64, 8))], {}, 400),  # too elongated: known from the header
    ],
)
def test_a_request_refused_from_its_fields_or_headers_decodes_nothing(
    client: TestClient, decodes: list[str], images: list[bytes], fields: dict[str, Any], status: int
) -> None:
    response = client.post(EDITS, **edit(images, **fields))
    assert response.status_code == status, response.text
    assert decodes == []


def test_a_key_over_its_quota_is_refused_before_decoding(keyed: Callable[..., TestClient], decodes: list[str]) -> None:
    client = keyed(quota_megapixels=0.001, quota_period=Period.DAY)
    response = client.post(EDITS, **edit([BOMB]))
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert decodes == []


def test_a_request_that_made_the_server_decode_counts_toward_the_rate(
    keyed: Callable[..., TestClient], decodes: list[str]
) -> None:
    client = keyed(rpm=1)
    corrupt = BOMB[: len(BOMB) // 2]  # the header is whole, the pixels are not
    refused = client.post(EDITS, **edit([corrupt]))
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_image"
    assert decodes == ["images[0]"]
    limited = client.post(EDITS, **edit([PNG]))
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert decodes == ["images[0]"]  # the refusal came before decoding


def test_a_large_reference_is_decoded_straight_to_the_models_size(client: TestClient, decodes: list[str]) -> None:
    response = client.post(JOBS, **edit([BOMB]))
    assert response.status_code == 202, response.text
    assert response.json()["request"]["references"] == 1
    assert decodes == ["images[0]"]


# -- unexpected errors are logged once, briefly ---------------------------------------------------


def test_an_unexpected_error_is_logged_once_and_briefly(
    make_app: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    """Through uvicorn, which would log an error raised on to it a second time, in full."""
    app = make_app()

    def recurse(depth: int) -> int:
        return recurse(depth + 1) + 1

    async def broken() -> None:
        recurse(0)

    app.add_api_route("/broken", broken)
    server_log = logging.getLogger("uvicorn")  # it does not propagate to the root logger
    server_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.ERROR), serve_in_thread(app) as url:
            response = httpx.get(f"{url}/broken", timeout=TEST_TIMEOUT)
            assert httpx.get(f"{url}/health", timeout=TEST_TIMEOUT).status_code == 200
    finally:
        server_log.removeHandler(caplog.handler)
    assert response.status_code == 500
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage()[:200] for record in errors]
    message = errors[0].getMessage()
    assert "RecursionError" in message
    assert "GET /broken" in message
    assert len(message) < 5000
