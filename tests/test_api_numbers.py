"""Numbers clients send as text, through a real server on loopback: every place takes ASCII digits
only and answers anything else with a 4xx in the error shape, never a 500 (issue 13).

The places: query strings (limit, days), headers (Prefer: wait=N, Last-Event-ID, Content-Length),
form fields, history cursors, signed-URL expiries and size strings. Also the key limits of the
admin API, the CLI and the settings, which must be finite and above 0.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette import types as asgi

from fluxserve.accounts.keys import Scope
from fluxserve.api.app import create_app
from fluxserve.api.middleware import BodyLimit
from fluxserve.cli.main import main
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.errors import InvalidRequest
from fluxserve.settings import Settings, load_settings
from tests.helpers import MAX_WAIT, TEST_TIMEOUT
from tests.jobs_support import JOBS, QUICK, LiveServer
from tests.servers import serve_in_thread

HOSTILE = [str(10**30), "²", "٢٥٦", "1_0", " 5", "+5", "", "-0", "nan", "inf", "1e3"]
"""What int(), float(), str.isdigit() or pydantic's lax mode let through; none is a plain number."""
FORM_WHOLE = ["n", "seed", "steps", "width", "height", "output_compression", "partial_images", "safety_tolerance"]


WAIT = f"wait={math.ceil(TEST_TIMEOUT)}"


class Numbers(LiveServer):
    finished: dict[str, Any]
    """A job that succeeded, with its image as a signed URL."""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, engines: dict[str, DiffusersEngine]
) -> Iterator[Numbers]:
    """One server for the module, with an admin key in its client, and one finished job."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("numbers"),
        cache_dir=cache_dir,
        models=["tiny-random-base"],
        warmup=False,
        allow_download=False,
        max_wait_seconds=MAX_WAIT,
    )
    app = create_app(settings, {"tiny-random-base": engines["tiny-random-base"]})
    with serve_in_thread(app) as url, Numbers(app, url) as live:
        _, secret = live.service.keys.create("root", Scope.ADMIN)
        live.http.headers["authorization"] = f"Bearer {secret}"
        live.http.timeout = TEST_TIMEOUT
        job = live.submit({**QUICK, "response_format": "url"})
        live.finished = live.wait_status(job["id"], "succeeded", timeout=TEST_TIMEOUT)
        yield live


@pytest.fixture(autouse=True)
def healthy_after(server: Numbers) -> Iterator[None]:
    """After every refusal the server still answers, and no job was made by a refused request."""
    jobs_before = len(server.service.store.recent())
    yield
    assert server.http.get("/v1/models").status_code == 200
    assert server.http.get(JOBS, params={"limit": "1"}).status_code == 200
    assert len(server.service.store.recent()) == jobs_before


def assert_refused(response: httpx.Response, status: int = 400, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] in ("invalid_request_error", "permission_error")
    if param is not None:
        assert error["param"] == param, error
    return error


def header(value: str) -> bytes:
    """As a client would send it: Latin-1 where it can be ('²' is one byte), else UTF-8."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# -- query strings -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_a_page_size_is_ascii_digits_from_1_to_100(server: Numbers, value: str) -> None:
    error = assert_refused(server.http.get(JOBS, params={"limit": value}), param="limit")
    assert "from 1 to 100" in error["message"]


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/admin/usage"])
@pytest.mark.parametrize("value", HOSTILE)
def test_usage_days_are_ascii_digits_from_1_to_366(server: Numbers, path: str, value: str) -> None:
    assert_refused(server.http.get(path, params={"days": value}), param="days")


def test_plain_numbers_in_the_query_still_work(server: Numbers) -> None:
    assert len(server.http.get(JOBS, params={"limit": "1"}).json()["data"]) == 1
    assert server.http.get("/v1/usage", params={"days": "366"}).status_code == 200
    assert_refused(server.http.get("/v1/usage", params={"days": "367"}), param="days")


# -- history cursors ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*HOSTILE, str(2**63), str(10**400), "-1"])
def test_an_edited_cursor_is_a_400(server: Numbers, value: str) -> None:
    for raw in (f"1700000000.5:{value}", f"{value}:1", value):
        error = assert_refused(server.http.get(JOBS, params={"cursor": cursor(raw)}), param="cursor")
        assert "next_cursor" in error["message"]


def test_a_cursor_the_server_gave_still_pages(server: Numbers) -> None:
    job = server.submit(QUICK, headers={"prefer": WAIT})
    first = server.http.get(JOBS, params={"limit": "1"}).json()
    assert first["has_more"]
    rest = server.http.get(JOBS, params={"limit": "1", "cursor": first["next_cursor"]}).json()
    assert [item["id"] for item in first["data"] + rest["data"]] == [job["id"], server.finished["id"]]
    assert server.http.delete(f"{JOBS}/{job['id']}").status_code == 204


# -- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [v for v in HOSTILE if v != " 5"])  # RFC 7240 allows spaces around '='
def test_prefer_wait_is_ascii_digits(server: Numbers, value: str) -> None:
    response = server.http.post(JOBS, json=QUICK, headers={"prefer": b"wait=" + header(value)})
    assert_refused(response, param="Prefer")


@pytest.mark.parametrize("value", [*HOSTILE, "9" * 5000])
def test_a_last_event_id_that_is_not_ours_replays_the_job_as_it_stands(server: Numbers, value: str) -> None:
    job = server.finished
    boot = server.service.bus.boot
    for last in (f"{boot}-{value}", value.strip()):  # a header value cannot start with a space
        with server.http.stream("GET", f"{JOBS}/{job['id']}/events", headers={"last-event-id": header(last)}) as events:
            body = events.read().decode()
        # 200 with the job's state, or 204 when the id claims to be past the end: never a 500.
        assert events.status_code in (200, 204), body
        assert events.status_code == 204 or "succeeded" in body


@pytest.mark.parametrize("length", [b"9" * 40, b"9" * 5000, b"\xb2", b"1_0"])
def test_a_content_length_the_server_let_through_is_never_a_500(length: bytes) -> None:
    """uvicorn refuses these itself; the body limit must not depend on it (another server may not)."""
    sent: list[asgi.Message] = []

    async def app(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> asgi.Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: asgi.Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": JOBS, "headers": [(b"content-length", length)]}
    asyncio.run(BodyLimit(app, max_bytes=1024)(scope, receive, send))
    assert sent[0]["status"] == (413 if length.isdigit() else 204)


# -- form fields, sizes and JSON numbers --------------------------------------------------------


@pytest.mark.parametrize("field", FORM_WHOLE)
@pytest.mark.parametrize("value", HOSTILE)
def test_form_whole_numbers_are_ascii_digits(server: Numbers, field: str, value: str) -> None:
    response = server.http.post(JOBS, data={**QUICK, "steps": "3", field: value})
    assert_refused(response, param=field)


@pytest.mark.parametrize("value", [*HOSTILE, "-1", "1e-3", "4,5"])
def test_form_guidance_is_a_plain_finite_decimal(server: Numbers, value: str) -> None:
    response = server.http.post(JOBS, data={**QUICK, "steps": "3", "guidance": value})
    assert_refused(response, param="guidance")


def test_plain_form_numbers_still_work(server: Numbers) -> None:
    fields = {**QUICK, "steps": "3", "seed": "42", "guidance": "4.5", "n": "1", "output_compression": "0"}
    response = server.http.post(JOBS, data=fields, headers={"prefer": WAIT})
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["status"], job["request"]["seed"], job["request"]["guidance"]) == ("succeeded", 42, 4.5)
    assert server.http.delete(f"{JOBS}/{job['id']}").status_code == 204


@pytest.mark.parametrize("value", HOSTILE)
def test_a_size_is_ascii_digits(server: Numbers, value: str) -> None:
    size = f"64x{value}"
    assert_refused(server.http.post(JOBS, json={**QUICK, "size": size}), param="size")
    assert_refused(server.http.post(JOBS, data={**QUICK, "steps": "3", "size": size}), param="size")


@pytest.mark.parametrize("field", ["width", "height", "seed", "steps", "n"])
def test_a_json_number_of_400_digits_is_a_400(server: Numbers, field: str) -> None:
    body = {"model": "tiny-random-base", "prompt": "quick", "steps": 3, "width": 64, "height": 64, field: "HUGE"}
    content = json.dumps(body).replace('"HUGE"', str(10**400))
    response = server.http.post(JOBS, content=content, headers={"content-type": "application/json"})
    assert_refused(response, param=field)


# -- signed image URLs -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*HOSTILE, "-1", "9" * 5000])
def test_a_signed_url_with_a_hostile_expiry_is_a_403(server: Numbers, value: str) -> None:
    url = urlsplit(server.finished["images"][0]["url"])
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    with httpx.Client(base_url=server.url, timeout=TEST_TIMEOUT) as anyone:  # no key: the URL is the key
        assert anyone.get(f"{url.path}?{urlencode(query)}").status_code == 200
        error = assert_refused(anyone.get(f"{url.path}?{urlencode({**query, 'expires': value})}"), 403)
    assert error["code"] == "invalid_signature"


# -- key limits: admin API, CLI, settings --------------------------------------------------------

NOT_LIMITS: list[tuple[str, str]] = [
    ("quota_megapixels", "Infinity"),
    ("quota_megapixels", "-Infinity"),
    ("quota_megapixels", "NaN"),
    ("quota_megapixels", "1e309"),
    ("quota_megapixels", '"inf"'),
    ("quota_megapixels", '"Infinity"'),
    ("quota_megapixels", '"500"'),
    ("quota_megapixels", "0"),
    ("quota_megapixels", "-5"),
    ("quota_megapixels", "1e300"),
    ("rpm", "0"),
    ("rpm", "-1"),
    ("rpm", "1.5"),
    ("rpm", "5.0"),
    ("rpm", '"5"'),
    ("rpm", "true"),
    ("rpm", str(10**30)),
    ("concurrency", "0"),
    ("concurrency", "Infinity"),
    ("concurrency", str(10**400)),
]


@pytest.mark.parametrize(("field", "value"), NOT_LIMITS)
def test_the_admin_api_refuses_limits_that_are_not_finite_and_positive(server: Numbers, field: str, value: str) -> None:
    period = ', "quota_period": "day"' if field == "quota_megapixels" else ""
    content = f'{{"name": "limited", "{field}": {value}{period}}}'
    response = server.http.post("/v1/admin/keys", content=content, headers={"content-type": "application/json"})
    assert_refused(response, param=field)
    assert [key["name"] for key in server.http.get("/v1/admin/keys").json()["data"]] == ["root"]


@pytest.mark.parametrize("quota", ["inf", "-inf", "nan", "1e400", "0", "-1"])
def test_the_cli_refuses_a_quota_that_is_not_finite_and_positive(
    tmp_path: Path, quota: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = str(tmp_path / "data")
    assert main(["keys", "create", "--name", "q", "--quota-mp", quota, "--per", "day", "--data-dir", data_dir]) != 0
    assert "quota_megapixels" in capsys.readouterr().err
    assert main(["keys", "list", "--json", "--data-dir", data_dir]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("option", ["--rpm", "--concurrency"])
def test_the_cli_refuses_a_rate_of_zero(tmp_path: Path, option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--name", "r", option, "0", "--data-dir", str(tmp_path / "data")]) != 0
    assert option.lstrip("-") in capsys.readouterr().err


FLOAT_SETTINGS = [name for name, field in Settings.model_fields.items() if field.annotation is float]


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e309"])
def test_no_float_setting_takes_inf_or_nan(name: str, value: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        load_settings(environ={f"FLUXSERVE_{name.upper()}": value})
    assert refused.value.param == name
