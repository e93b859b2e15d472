"""API keys limited to some LoRA adapters: made through the admin API and the CLI, enforced on every
images endpoint (JSON and multipart) with a 403 that names the adapter, GET /v1/loras filtered,
and keys made before the limit existed still allowed every adapter."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fluxserve.accounts.keys import MAX_KEY_LORAS, KeyLimits, Scope, hash_key, new_key, new_key_id, prefix_of
from fluxserve.accounts.keystore import KeyStore
from fluxserve.api.app import create_app
from fluxserve.cli.main import main
from fluxserve.db import DATABASE_FILE, SqliteDatabase
from fluxserve.db.sqlite import MIGRATIONS
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.loras import LoraOptions
from fluxserve.errors import InvalidRequest
from fluxserve.imaging.encode import read_parameters
from fluxserve.settings import Settings
from tests.helpers import MAX_WAIT, PREFER_WAIT, photo, png_bytes

MODEL = "tiny-random"
QUICK = {"prompt": "a lighthouse", "size": "256x256", "seed": 5}
STYLE = [{"name": "style", "scale": 0.8}]


@pytest.fixture(scope="module")
def lora_engine(options: EngineOptions, lora_dir: Path) -> Iterator[dict[str, DiffusersEngine]]:
    """An engine of its own, so the session's shared engines never hold an adapter."""
    engine = DiffusersEngine(MODEL, EngineOptions(options.cache_dir, False, loras=LoraOptions(directory=lora_dir)))
    engine.load()
    yield {MODEL: engine}
    engine.close()


class Server:
    """A TestClient app with an admin key; ``as_(secret)`` sends requests with another key."""

    def __init__(self, client: TestClient, admin: str, data_dir: Path) -> None:
        self.client, self.admin, self.data_dir = client, admin, data_dir

    def as_(self, secret: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {secret}", **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def new_key(self, **body: Any) -> dict[str, Any]:
        response = self.as_(self.admin, "POST", "/v1/admin/keys", json={"name": "limited", **body})
        assert response.status_code == 201, response.text
        made: dict[str, Any] = response.json()
        return made


def settings_for(data_dir: Path, cache_dir: Path, lora_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        cache_dir=cache_dir,
        models=[MODEL],
        warmup=False,
        allow_download=False,
        lora_dir=lora_dir,
        max_wait_seconds=MAX_WAIT,
    )


def serve(data_dir: Path, cache_dir: Path, lora_dir: Path, engines: dict[str, DiffusersEngine]) -> Iterator[Server]:
    app = create_app(settings_for(data_dir, cache_dir, lora_dir), engines)
    _, admin = app.state.services.keys.create("root", Scope.ADMIN)
    with TestClient(app) as client:
        yield Server(client, admin, data_dir)


@pytest.fixture
def server(
    tmp_path: Path, cache_dir: Path, lora_dir: Path, lora_engine: dict[str, DiffusersEngine]
) -> Iterator[Server]:
    yield from serve(tmp_path / "data", cache_dir, lora_dir, lora_engine)


def assert_not_allowed(response: httpx.Response, adapter: str, param: str = "loras[0].name") -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("permission_error", "adapter_not_allowed", param)
    assert repr(adapter) in error["message"]


def job_count(server: Server) -> int:
    row = server.client.app.state.services.db.fetch_one("SELECT count(*) FROM jobs")  # type: ignore[attr-defined]
    assert row is not None
    return int(row[0])


def test_a_key_limited_through_the_admin_api_uses_only_its_adapters(server: Server) -> None:
    made = server.new_key(loras=["style", "more/third"])
    assert made["loras"] == ["style", "more/third"]
    assert server.as_(server.admin, "GET", f"/v1/admin/keys/{made['id']}").json()["loras"] == ["style", "more/third"]
    secret = made["key"]

    allowed = server.as_(secret, "POST", "/v1/images/generations", json={**QUICK, "loras": STYLE})
    assert allowed.status_code == 200, allowed.text
    job = server.as_(secret, "GET", f"/v1/jobs/{allowed.headers['x-job-id']}").json()
    assert job["request"]["loras"] == STYLE

    before = job_count(server)
    refused = server.as_(
        secret, "POST", "/v1/images/generations", json={**QUICK, "loras": [*STYLE, {"name": "ink", "scale": 1}]}
    )
    assert_not_allowed(refused, "ink", "loras[1].name")
    assert "style, more/third" in refused.json()["error"]["message"]  # what the key may use instead
    assert job_count(server) == before  # refused before any job was made


def test_a_disallowed_adapter_is_refused_on_jobs_and_multipart_edits(server: Server) -> None:
    secret = server.new_key(loras=["style"])["key"]
    ink = [{"name": "ink", "scale": 1.0}]
    before = job_count(server)
    job = server.as_(secret, "POST", "/v1/jobs", json={**QUICK, "loras": ink}, headers=PREFER_WAIT)
    assert_not_allowed(job, "ink")
    as_form = server.as_(secret, "POST", "/v1/jobs", data={"prompt": "x", "loras": json.dumps(ink)})
    assert_not_allowed(as_form, "ink")
    form = {"prompt": "make it blue", "size": "256x256", "loras": json.dumps(ink)}
    image = {"image": ("a.png", png_bytes(photo(64, 64)), "image/png")}
    assert_not_allowed(server.as_(secret, "POST", "/v1/images/edits", data=form, files=image), "ink")
    # Names are compared as sent: another spelling of an allowed file is not the allowed name.
    spelled = server.as_(secret, "POST", "/v1/jobs", json={**QUICK, "loras": [{"name": "style.safetensors"}]})
    assert_not_allowed(spelled, "style.safetensors")
    # An unknown name outside the list is a 403 too: a limited key learns nothing about other files.
    assert_not_allowed(server.as_(secret, "POST", "/v1/jobs", json={**QUICK, "loras": [{"name": "nope"}]}), "nope")
    assert job_count(server) == before

    allowed = server.as_(secret, "POST", "/v1/jobs", json={**QUICK, "loras": STYLE}, headers=PREFER_WAIT).json()
    assert allowed["status"] == "succeeded", allowed
    form["loras"] = json.dumps(STYLE)
    edited = server.as_(secret, "POST", "/v1/images/edits", data=form, files=image)
    assert edited.status_code == 200, edited.text
    assert read_parameters(server_image(edited))["loras"] == STYLE  # type: ignore[index]


def server_image(response: httpx.Response) -> bytes:
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def test_get_loras_lists_only_what_the_key_may_use(server: Server) -> None:
    limited = server.new_key(loras=["style", "more/third", "org/hub-adapter"])["key"]
    nothing = server.new_key(name="none", loras=[])["key"]
    unlimited = server.new_key(name="all")["key"]
    assert server.as_(server.admin, "GET", "/v1/admin/keys").json()["data"][-1]["loras"] is None

    def listed(secret: str) -> list[str]:
        response = server.as_(secret, "GET", "/v1/loras")
        assert response.status_code == 200, response.text
        return sorted(card["id"] for card in response.json()["data"])

    assert listed(limited) == ["more/third", "style"]
    assert listed(nothing) == []
    everything = listed(unlimited)
    assert {"style", "ink", "more/third", "flux1-style"} <= set(everything)
    assert listed(server.admin) == everything

    no_adapters = server.as_(nothing, "POST", "/v1/jobs", json={**QUICK, "loras": STYLE})
    assert_not_allowed(no_adapters, "style")
    assert "may use none" in no_adapters.json()["error"]["message"]
    plain = server.as_(nothing, "POST", "/v1/jobs", json=QUICK, headers=PREFER_WAIT).json()
    assert plain["status"] == "succeeded", plain  # a request without loras needs no permission


def test_an_unknown_allowed_name_lists_only_the_keys_adapters(server: Server) -> None:
    secret = server.new_key(loras=["style", "gone"])["key"]
    response = server.as_(secret, "POST", "/v1/jobs", json={**QUICK, "loras": [{"name": "gone"}]})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "unknown LoRA 'gone'" in message
    assert "style" in message
    assert "ink" not in message


@pytest.mark.parametrize(
    ("loras", "param"),
    [
        ("style", "loras"),
        ([""], "loras.0"),
        (["x" * 301], "loras.0"),
        ([1], "loras.0"),
        ([None], "loras.0"),
        (["style"] * 2, "loras[1]"),
        ([" style"], "loras[0]"),
        (["line\nbreak"], "loras[0]"),
        ([f"a{number}" for number in range(MAX_KEY_LORAS + 1)], "loras"),
    ],
)
def test_bad_loras_in_key_creation_are_400s(server: Server, loras: Any, param: str) -> None:
    response = server.as_(server.admin, "POST", "/v1/admin/keys", json={"name": "bad", "loras": loras})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", param), error
    names = [key["name"] for key in server.as_(server.admin, "GET", "/v1/admin/keys").json()["data"]]
    assert "bad" not in names


def test_a_key_limited_by_the_cli_is_enforced_and_listed(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = str(server.data_dir)
    assert main(["keys", "create", "--name", "cli", "--lora", "style", "--lora", "ink", "--data-dir", data_dir]) == 0
    secret = capsys.readouterr().out.strip()
    assert main(["keys", "create", "--name", "open", "--data-dir", data_dir]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--json", "--data-dir", data_dir]) == 0
    listed = {key["name"]: key["loras"] for key in json.loads(capsys.readouterr().out)}
    assert listed["cli"] == ["style", "ink"]
    assert listed["open"] is None
    assert main(["keys", "list", "--data-dir", data_dir]) == 0
    assert "LoRAs: style, ink" in capsys.readouterr().out

    assert sorted(card["id"] for card in server.as_(secret, "GET", "/v1/loras").json()["data"]) == ["ink", "style"]
    third = server.as_(secret, "POST", "/v1/jobs", json={**QUICK, "loras": [{"name": "more/third"}]})
    assert_not_allowed(third, "more/third")
    assert main(["keys", "create", "--name", "x", "--lora", "", "--data-dir", data_dir]) == 2
    assert "loras[0]" in capsys.readouterr().err


def test_a_key_made_before_the_limit_existed_may_use_every_adapter(
    tmp_path: Path,
    cache_dir: Path,
    lora_dir: Path,
    lora_engine: dict[str, DiffusersEngine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = tmp_path / "data"
    added = next(index for index, script in enumerate(MIGRATIONS) if "api_keys ADD COLUMN loras" in script)
    with monkeypatch.context() as old_version:
        old_version.setattr("fluxserve.db.sqlite.MIGRATIONS", MIGRATIONS[:added])
        old = SqliteDatabase(data_dir / DATABASE_FILE)
        secret = new_key()
        old.execute(  # the row as the version before wrote it: no loras column yet
            "INSERT INTO api_keys (id, prefix, hash, name, scope, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (new_key_id(), prefix_of(secret), hash_key(secret), "old", "generate", time.time()),
        )
        assert old.schema_version == added
        old.close()

    for server in serve(data_dir, cache_dir, lora_dir, lora_engine):
        assert server.client.app.state.services.db.schema_version == len(MIGRATIONS)  # type: ignore[attr-defined]
        views = {key["name"]: key for key in server.as_(server.admin, "GET", "/v1/admin/keys").json()["data"]}
        assert views["old"]["loras"] is None
        assert {"style", "ink"} <= {card["id"] for card in server.as_(secret, "GET", "/v1/loras").json()["data"]}
        used = server.as_(secret, "POST", "/v1/jobs", json={**QUICK, "loras": [{"name": "ink"}]}, headers=PREFER_WAIT)
        assert used.json()["status"] == "succeeded", used.text


def test_the_store_keeps_a_keys_adapters(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / DATABASE_FILE)
    try:
        keys = KeyStore(database)
        limited, _ = keys.create("limited", limits=KeyLimits(rpm=5, loras=("style", "org/repo:w.safetensors")))
        nothing, _ = keys.create("nothing", limits=KeyLimits(loras=()))
        every, _ = keys.create("every")
        assert keys.get(limited.id).limits == KeyLimits(rpm=5, loras=("style", "org/repo:w.safetensors"))
        assert keys.get(nothing.id).limits.loras == ()
        assert keys.get(every.id).limits.loras is None
        assert keys.get(limited.id).describe(time.time())["loras"] == ["style", "org/repo:w.safetensors"]
    finally:
        database.close()
    with pytest.raises(InvalidRequest, match="twice"):
        KeyLimits(loras=("a", "a"))
    with pytest.raises(InvalidRequest, match="a list"):
        KeyLimits(loras=["a"])  # type: ignore[arg-type]
