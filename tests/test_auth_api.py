"""API keys through the real server on loopback: authentication, scopes, ownership, signed URLs,
rate limits, quotas and usage; keys made with the CLI and the admin API; the official client.

The server's clock (rate windows, quota periods, URL and key expiry) is a ManualClock.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from fluxserve.accounts.keys import KeyLimits, Period, Scope
from fluxserve.accounts.periods import iso
from fluxserve.api.app import create_app
from fluxserve.cli.main import main
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.errors import InsecureConfiguration
from fluxserve.settings import Settings
from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, ManualClock, wait_for
from tests.jobs_support import JOBS, QUICK, SLOW, LiveServer
from tests.postgres_support import BOTH_DATABASES

TINY_JOB = {**QUICK, "prompt": "a quiet harbour"}  # 64x64: 4096 pixels, 0.0039 megapixels
TINY_MP = 64 * 64 / 1024**2


class Keyed(LiveServer):
    """A live server whose requests carry no key unless given one."""

    clock: ManualClock

    def key(self, name: str = "alice", scope: Scope = Scope.GENERATE, **limits: Any) -> str:
        _, secret = self.service.keys.create(name, scope, KeyLimits(**limits))
        return secret

    def as_(self, secret: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=TEST_TIMEOUT, headers={"authorization": f"Bearer {secret}"})


@pytest.fixture
def start(make_server: Callable[..., LiveServer]) -> Callable[..., Keyed]:
    def build(*, admin_key: bool = True, **overrides: Any) -> Keyed:
        clock = ManualClock(time.time())
        server = make_server(serving=Keyed, clock=clock, **{"models": ["tiny-random-base"], **overrides})
        assert isinstance(server, Keyed)
        server.clock = clock
        if admin_key:
            server.admin = server.key("root", Scope.ADMIN)  # type: ignore[attr-defined]
        return server

    return build


@pytest.fixture
def server(start: Callable[..., Keyed]) -> Keyed:
    return start()


def job_count(server: Keyed) -> int:
    """Every job in the store, whoever made it."""
    row = server.services.db.fetch_one("SELECT count(*) AS jobs FROM jobs")
    assert row is not None
    return int(row["jobs"])


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    return error


# -- authentication ---------------------------------------------------------------------------

PROTECTED = [
    ("POST", "/v1/images/generations"),
    ("POST", "/v1/images/edits"),
    ("POST", JOBS),
    ("GET", JOBS),
    ("GET", f"{JOBS}/job_AAAAAAAAAAAAAAAAAAAAAAAA"),
    ("GET", f"{JOBS}/job_AAAAAAAAAAAAAAAAAAAAAAAA/events"),
    ("POST", f"{JOBS}/job_AAAAAAAAAAAAAAAAAAAAAAAA/cancel"),
    ("DELETE", f"{JOBS}/job_AAAAAAAAAAAAAAAAAAAAAAAA"),
    ("GET", "/v1/models"),
    ("GET", "/v1/rules"),
    ("GET", "/v1/models/tiny-random-base"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys"),
    ("GET", "/v1/admin/keys/key_0000000000000000"),
    ("DELETE", "/v1/admin/keys/key_0000000000000000"),
    ("GET", "/v1/admin/usage"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_endpoint_but_health_needs_a_key(server: Keyed, method: str, path: str) -> None:
    response = server.http.request(method, path, json={"prompt": "x"})
    error = assert_error(response, 401, "missing_api_key")
    assert error["type"] == "authentication_error"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["x-request-id"]


def test_health_ready_and_the_openapi_document_stay_public(server: Keyed) -> None:
    assert server.http.get("/health").json() == {"status": "ok"}
    assert server.http.get("/ready").status_code == 200
    assert server.http.get("/openapi.json").status_code == 200


@BOTH_DATABASES
def test_wrong_revoked_and_expired_keys_are_401_each_saying_which(server: Keyed) -> None:
    good = server.key("alice")
    revoked = server.key("bob")
    server.service.keys.revoke(server.service.keys.find("bob").id)
    _, expiring = server.service.keys.create("carol", expires_at=server.clock() + 3600)
    server.clock.advance(3600)
    cases = {
        good[:-1] + ("A" if good[-1] != "A" else "B"): "invalid_api_key",
        "fsk_" + "x" * 48: "invalid_api_key",
        "sk-not-ours": "invalid_api_key",
        revoked: "revoked_api_key",
        expiring: "expired_api_key",
    }
    for key, code in cases.items():
        response = server.http.post(JOBS, json=TINY_JOB, headers={"authorization": f"Bearer {key}"})
        assert_error(response, 401, code)
    assert job_count(server) == 0  # nothing was queued


def test_the_key_may_come_as_bearer_or_as_x_key(server: Keyed) -> None:
    key = server.key()
    assert server.http.get("/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
    assert server.http.get("/v1/models", headers={"x-key": key}).status_code == 200
    assert server.http.get("/v1/models", headers={"authorization": f"bearer {key}", "x-key": key}).status_code == 200
    mixed = server.http.get("/v1/models", headers={"authorization": f"Bearer {key}", "x-key": server.admin})  # type: ignore[attr-defined]
    assert_error(mixed, 400, "invalid_request")
    basic = server.http.get("/v1/models", headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert_error(basic, 401, "invalid_api_key")


def test_a_generate_key_cannot_use_the_admin_endpoints(server: Keyed) -> None:
    with server.as_(server.key()) as alice:
        for method, path in [(m, p) for m, p in PROTECTED if p.startswith("/v1/admin")]:
            error = assert_error(alice.request(method, path, json={"name": "x"}), 403, "insufficient_scope")
            assert error["type"] == "permission_error"


# -- keys made by the admin API and by the CLI --------------------------------------------------


@BOTH_DATABASES
def test_the_admin_api_creates_lists_and_revokes_keys(server: Keyed) -> None:
    with server.as_(server.admin) as root:  # type: ignore[attr-defined]
        made = root.post(
            "/v1/admin/keys",
            json={"name": "studio", "rpm": 30, "quota_megapixels": 100, "quota_period": "month", "expires": "30d"},
        )
        assert made.status_code == 201, made.text
        created = made.json()
        assert created["key"].startswith("fsk_")
        assert created["prefix"] == created["key"][:12]
        assert (created["scope"], created["status"], created["rpm"]) == ("generate", "active", 30)
        assert created["expires_at"] == pytest.approx(server.clock() + 30 * 86400, abs=1)

        listed = root.get("/v1/admin/keys").json()["data"]
        assert [key["name"] for key in listed] == ["root", "studio"]
        assert all("key" not in key for key in listed)  # shown once, at creation
        assert root.get(f"/v1/admin/keys/{created['id']}").json()["prefix"] == created["prefix"]

        with server.as_(created["key"]) as studio:
            assert studio.post(JOBS, json=TINY_JOB).status_code == 202
            revoked = root.delete(f"/v1/admin/keys/{created['id']}")
            assert revoked.json()["status"] == "revoked"
            assert_error(studio.post(JOBS, json=TINY_JOB), 401, "revoked_api_key")

        assert_error(root.post("/v1/admin/keys", json={"name": "x", "colour": "red"}), 400, "invalid_request")
        assert_error(root.post("/v1/admin/keys", json={"name": "x", "quota_megapixels": 5}), 400, "invalid_request")
        assert_error(root.post("/v1/admin/keys", json={"name": "x", "expires": "soon"}), 400, "invalid_request")
        assert_error(root.get("/v1/admin/keys/key_0000000000000000"), 404, "not_found")


def test_keys_made_by_the_cli_work_on_a_running_server(server: Keyed, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = str(server.service.settings.data_dir)
    assert main(["keys", "create", "--name", "cli", "--rpm", "5", "--data-dir", data_dir]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("fsk_")
    with server.as_(secret) as cli:
        assert cli.post(JOBS, json=TINY_JOB, headers=PREFER_WAIT).json()["status"] == "succeeded"
    assert main(["keys", "list", "--json", "--data-dir", data_dir]) == 0
    listed = capsys.readouterr().out
    assert '"name": "cli"' in listed
    assert secret not in listed
    assert main(["keys", "revoke", "cli", "--data-dir", data_dir]) == 0
    capsys.readouterr()
    with server.as_(secret) as cli:
        assert_error(cli.post(JOBS, json=TINY_JOB), 401, "revoked_api_key")
    assert main(["keys", "usage", "--key", "cli", "--json", "--data-dir", data_dir]) == 0
    [row] = json.loads(capsys.readouterr().out)  # the job made above, billed once it succeeded
    assert (row["jobs"], row["images"], row["model"]) == (1, 1, "tiny-random-base")


def test_the_cli_sets_every_limit_and_refuses_bad_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = str(tmp_path)
    flags = ["--scope", "admin", "--rpm", "5", "--quota-mp", "10", "--per", "month", "--concurrency", "2"]
    assert main(["keys", "create", "--name", "ops", *flags, "--expires", "2099-01-01", "--data-dir", data_dir]) == 0
    assert "not shown again" in capsys.readouterr().err
    assert main(["keys", "list", "--json", "--data-dir", data_dir]) == 0
    [key] = json.loads(capsys.readouterr().out)
    assert {k: key[k] for k in ("scope", "rpm", "quota_megapixels", "quota_period", "concurrency", "status")} == {
        "scope": "admin",
        "rpm": 5,
        "quota_megapixels": 10,
        "quota_period": "month",
        "concurrency": 2,
        "status": "active",
    }
    assert key["expires_at"] == datetime(2099, 1, 1, tzinfo=UTC).timestamp()
    for bad, says in (
        (["--per", "week", "--quota-mp", "1"], "--per must be day or month"),
        (["--quota-mp", "1"], "--quota-mp and --per go together"),
        (["--expires", "yesterday"], "expires 'yesterday' should be a date"),
        (["--expires", "2001-01-01"], "expires is in the past"),
        (["--scope", "root"], "--scope must be generate or admin"),
        (["--rpm", "0"], "rpm must be a whole number from 1"),
    ):
        assert main(["keys", "create", "--name", "x", *bad, "--data-dir", data_dir]) == 2
        assert says in capsys.readouterr().err
    assert main(["keys", "revoke", "nobody", "--data-dir", data_dir]) == 1
    assert "no key 'nobody'" in capsys.readouterr().err


# -- ownership --------------------------------------------------------------------------------


@BOTH_DATABASES
def test_one_key_cannot_read_cancel_delete_or_download_another_keys_job(server: Keyed) -> None:
    with server.as_(server.key("alice")) as alice, server.as_(server.key("bob")) as bob:
        done = alice.post(JOBS, json={**TINY_JOB, "response_format": "url"}, headers=PREFER_WAIT).json()
        assert done["status"] == "succeeded"
        running = alice.post(JOBS, json=SLOW).json()
        for job in (done, running):
            for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/cancel"), ("DELETE", "")):
                assert_error(bob.request(method, f"{JOBS}/{job['id']}{suffix}"), 404, "not_found")
        assert bob.get(JOBS).json()["data"] == []
        assert [job["id"] for job in alice.get(JOBS).json()["data"]] == [running["id"], done["id"]]
        # Bob has no signed URL for Alice's image; the bare path is refused.
        url = urlsplit(done["images"][0]["url"])
        assert_error(bob.get(url.path), 403, "invalid_signature")
        assert alice.post(f"{JOBS}/{running['id']}/cancel").status_code in (200, 202)


@BOTH_DATABASES
def test_idempotency_keys_belong_to_the_api_key(server: Keyed) -> None:
    with server.as_(server.key("alice")) as alice, server.as_(server.key("bob")) as bob:
        headers = {"idempotency-key": "order-1"}
        first = alice.post(JOBS, json=TINY_JOB, headers=headers).json()
        assert alice.post(JOBS, json=TINY_JOB, headers=headers).json()["id"] == first["id"]
        theirs = bob.post(JOBS, json={**TINY_JOB, "prompt": "other"}, headers=headers)
        assert theirs.status_code == 202  # not a conflict with Alice's request, and not her job
        assert theirs.json()["id"] != first["id"]


# -- signed URLs ------------------------------------------------------------------------------


def test_signed_urls_work_without_a_key_until_they_expire(server: Keyed) -> None:
    alice = server.as_(server.key())
    job = alice.post(JOBS, json={**TINY_JOB, "response_format": "url"}, headers=PREFER_WAIT).json()
    url = job["images"][0]["url"]
    opened = httpx.get(url, timeout=TEST_TIMEOUT)  # no header at all: a browser or an <img>
    assert opened.status_code == 200
    assert opened.headers["content-type"] == "image/png"

    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    signature = query["signature"]
    tampered = {**query, "signature": ("A" if signature[0] != "A" else "B") + signature[1:]}
    later = {**query, "expires": str(int(query["expires"]) + 3600)}
    other_image = parts.path.replace("/0.png", "/1.png")
    for path, params in ((parts.path, tampered), (parts.path, later), (other_image, query), (parts.path, {})):
        response = httpx.get(f"{server.url}{path}?{urlencode(params)}", timeout=TEST_TIMEOUT)
        assert_error(response, 403, "invalid_signature")

    assert int(query["expires"]) >= server.clock() + server.service.settings.url_ttl_seconds
    server.clock.now = int(query["expires"]) - 1
    assert httpx.get(url, timeout=TEST_TIMEOUT).status_code == 200
    server.clock.advance(1)
    assert_error(httpx.get(url, timeout=TEST_TIMEOUT), 403, "url_expired")
    fresh = alice.get(f"{JOBS}/{job['id']}").json()["images"][0]["url"]
    assert fresh != url
    assert httpx.get(fresh, timeout=TEST_TIMEOUT).status_code == 200
    alice.close()


# -- rate limits, concurrency and quotas --------------------------------------------------------


def test_the_rate_limit_refuses_with_retry_after_and_counts_only_accepted_requests(server: Keyed) -> None:
    with server.as_(server.key(rpm=2)) as alice:
        assert_error(alice.post(JOBS, json={**TINY_JOB, "steps": 0}), 400, "invalid_request")  # not counted
        assert server.service.keys.find("alice").last_used_at is None
        assert alice.post(JOBS, json=TINY_JOB).status_code == 202
        assert server.service.keys.find("alice").last_used_at == server.clock()
        server.clock.advance(20)
        assert alice.post(JOBS, json=TINY_JOB).status_code == 202
        server.clock.advance(10)
        refused = alice.post(JOBS, json=TINY_JOB)
        error = assert_error(refused, 429, "rate_limit_exceeded")
        assert error["type"] == "rate_limit_error"
        assert refused.headers["retry-after"] == "30"  # the first request leaves the window at +60
        assert "x-should-retry" not in refused.headers  # waiting does help: the SDK may retry
        server.clock.advance(29)
        assert_error(alice.post("/v1/images/generations", json=TINY_JOB), 429, "rate_limit_exceeded")
        server.clock.advance(1)
        assert alice.post(JOBS, json=TINY_JOB).status_code == 202
        assert job_count(server) == 3
    with server.as_(server.key("bob", rpm=1)) as bob:  # each key has its own window
        assert bob.post(JOBS, json=TINY_JOB).status_code == 202


@BOTH_DATABASES
def test_the_concurrency_limit_counts_queued_and_running_jobs(server: Keyed) -> None:
    with server.as_(server.key(concurrency=1)) as alice:
        running = alice.post(JOBS, json=SLOW).json()
        refused = alice.post(JOBS, json=TINY_JOB)
        assert_error(refused, 429, "concurrency_limit_exceeded")
        assert int(refused.headers["retry-after"]) >= 1
        alice.post(f"{JOBS}/{running['id']}/cancel")
        wait_for(lambda: alice.get(f"{JOBS}/{running['id']}").json()["status"] == "canceled")
        assert alice.post(JOBS, json=TINY_JOB).status_code == 202


@BOTH_DATABASES
def test_a_quota_holds_across_requests_says_when_it_resets_and_resets(server: Keyed) -> None:
    day_start = server.clock() - server.clock() % 86400
    server.clock.now = day_start + 86400 - 120  # two minutes before midnight UTC
    quota = 3 * TINY_MP  # three 64x64 images a day
    with server.as_(server.key(quota_megapixels=quota, quota_period=Period.DAY)) as alice:
        assert alice.post(JOBS, json={**TINY_JOB, "n": 2}, headers=PREFER_WAIT).json()["status"] == ("succeeded")
        too_big = alice.post(JOBS, json={**TINY_JOB, "n": 2})
        error = assert_error(too_big, 429, "quota_exceeded")
        assert error["type"] == "insufficient_quota"
        assert f"resets at {iso(day_start + 86400)}" in error["message"]
        assert too_big.headers["x-should-retry"] == "false"
        assert too_big.headers["x-quota-reset"] == str(int(day_start + 86400))
        assert too_big.headers["retry-after"] == "120"
        # Refused requests are not counted: one more image still fits.
        queued = alice.post(JOBS, json=SLOW | {"size": "64x64"})
        assert queued.status_code == 202
        assert_error(alice.post(JOBS, json=TINY_JOB), 429, "quota_exceeded")  # reserved by the queued job
        # A canceled job is not billed: its megapixels come back.
        alice.post(f"{JOBS}/{queued.json()['id']}/cancel")
        wait_for(lambda: alice.get(f"{JOBS}/{queued.json()['id']}").json()["status"] == "canceled")
        assert alice.post(JOBS, json=TINY_JOB, headers=PREFER_WAIT).json()["status"] == "succeeded"
        assert_error(alice.post(JOBS, json=TINY_JOB), 429, "quota_exceeded")

        usage = alice.get("/v1/usage").json()
        assert usage["quota"]["used_megapixels"] == pytest.approx(quota, abs=1e-3)
        assert [(row["jobs"], row["images"]) for row in usage["data"]] == [(2, 3)]

        server.clock.advance(120)  # midnight: a new day
        assert alice.post(JOBS, json={**TINY_JOB, "n": 3}).status_code == 202


@BOTH_DATABASES
def test_usage_is_recorded_per_job_and_reported_per_key_and_day(server: Keyed) -> None:
    with server.as_(server.key("alice")) as alice, server.as_(server.key("bob")) as bob:
        done = alice.post(JOBS, json={**TINY_JOB, "n": 2}, headers=PREFER_WAIT).json()
        assert done["usage"] == {
            "input_megapixels": 0.0,
            "output_megapixels": round(2 * TINY_MP, 4),
            "steps": 2 * TINY_JOB["steps"],
            "images": 2,
        }
        assert bob.post(JOBS, json=TINY_JOB, headers=PREFER_WAIT).json()["status"] == "succeeded"
        failed_run = bob.post(JOBS, json=SLOW).json()
        bob.post(f"{JOBS}/{failed_run['id']}/cancel")

        [row] = alice.get("/v1/usage").json()["data"]
        assert row["key_id"] == server.service.keys.find("alice").id
        assert row["day"] == time.strftime("%Y-%m-%d", time.gmtime(server.clock()))
        assert (row["model"], row["jobs"], row["images"], row["steps"]) == ("tiny-random-base", 1, 2, 6)
        assert row["megapixels"] == pytest.approx(2 * TINY_MP, abs=1e-4)
        assert "quota" not in alice.get("/v1/usage").json()
        assert_error(alice.get("/v1/usage", params={"days": 0}), 400, "invalid_request")
        assert_error(alice.get("/v1/usage", params={"day": 3}), 400, "invalid_request")
        # Deleting a job does not give its usage back.
        assert alice.delete(f"{JOBS}/{done['id']}").status_code == 204
        assert alice.get("/v1/usage").json()["data"][0]["jobs"] == 1

    with server.as_(server.admin) as root:  # type: ignore[attr-defined]
        every = root.get("/v1/admin/usage").json()["data"]
        assert sorted(row["jobs"] for row in every) == [1, 1]  # the canceled job is not billed


# -- the official client, start-up rules ----------------------------------------------------------


def test_the_openai_client_works_with_a_created_key_and_reports_a_wrong_one(server: Keyed) -> None:
    key = server.key()
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0) as client:
        result = client.images.generate(model="tiny-random-base", prompt="a lighthouse", size="64x64", n=1)
        assert result.data is not None
        assert result.data[0].b64_json
        url = (
            client.images.generate(model="tiny-random-base", prompt="a boat", size="64x64", response_format="url")
            .data[0]
            .url
        )  # type: ignore[index]
        assert url is not None
        assert httpx.get(url, timeout=TEST_TIMEOUT).status_code == 200
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="fsk_" + "0" * 48, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.images.generate(model="tiny-random-base", prompt="x", size="64x64")
        assert refused.value.code == "invalid_api_key"
    with (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0) as client,
        pytest.raises(openai.PermissionDeniedError),
    ):
        client.get("/admin/keys", cast_to=object)


def test_a_loopback_server_without_keys_is_open_until_the_first_key(start: Callable[..., Keyed]) -> None:
    server = start(admin_key=False)
    assert server.http.get("/v1/models").status_code == 200
    for placeholder in ("Bearer unused", "Bearer", "Basic dXNlcjpwYXNz"):
        assert server.http.get("/v1/models", headers={"authorization": placeholder}).status_code == 200
    # Open for this machine only: a request a proxy forwarded from elsewhere is not served.
    forwarded = server.http.get("/v1/models", headers={"x-forwarded-for": "203.0.113.9"})
    assert "proxy forwarded" in assert_error(forwarded, 401, "missing_api_key")["message"]
    # A value shaped like one of our keys is always checked.
    assert_error(server.http.get("/v1/models", headers={"x-key": "fsk_" + "0" * 48}), 401, "invalid_api_key")
    key = server.key()
    assert_error(server.http.get("/v1/models"), 401, "missing_api_key")
    assert server.http.get("/v1/models", headers={"x-key": key}).status_code == 200


def _settings(tmp_path: Path, cache_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "cache_dir": cache_dir, "models": ["tiny-random"]}
    return Settings(**{**values, **overrides})


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "fluxserve.example"])
def test_a_network_server_without_keys_refuses_to_start(
    tmp_path: Path, cache_dir: Path, engines: dict[str, DiffusersEngine], host: str
) -> None:
    settings = _settings(tmp_path, cache_dir, host=host)
    with pytest.raises(InsecureConfiguration, match="--no-auth"):
        create_app(settings, {"tiny-random": engines["tiny-random"]})


def test_the_cli_refuses_a_network_server_without_keys_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--host", "0.0.0.0", "--port", "1", "--data-dir", str(tmp_path), "--model", "tiny-random"])
    assert code == 1
    assert "refusing to listen on 0.0.0.0 with no active API key" in capsys.readouterr().err


def test_a_network_server_starts_with_a_key_or_with_no_auth_which_warns(
    tmp_path: Path, cache_dir: Path, engines: dict[str, DiffusersEngine], caplog: pytest.LogCaptureFixture
) -> None:
    engine = {"tiny-random": engines["tiny-random"]}
    caplog.set_level(logging.INFO, "fluxserve")
    open_app = create_app(_settings(tmp_path, cache_dir, host="0.0.0.0", no_auth=True), engine)
    assert any(r.levelno == logging.WARNING and "authentication is OFF" in r.message for r in caplog.records)
    with TestClient(open_app) as client:
        assert client.get("/v1/models").status_code == 200  # no key needed: the operator said so
        _, key = open_app.state.services.keys.create("ops")
        assert client.get("/v1/models").status_code == 200  # still open, even with keys
        assert client.get("/v1/models", headers={"x-key": key}).status_code == 200
    caplog.clear()
    keyed = create_app(_settings(tmp_path, cache_dir, host="0.0.0.0"), engine)  # the key made above
    assert any("API keys required (1 active)" in r.message for r in caplog.records)
    with TestClient(keyed) as client:
        assert_error(client.get("/v1/models"), 401, "missing_api_key")  # type: ignore[arg-type]
