"""Hosted models served the way a user serves them: by name (`--model cf:... --model bfl:...`), with
credentials from settings, side by side with a local model, against the providers' loopback fakes.

Per-provider behaviour (every error mapping, retries, references) is in test_cloudflare.py and
test_bfl.py; this file checks the wiring: registry, /v1/models, concurrency, cancel, usage, CLI.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from fluxserve.api.app import create_app
from fluxserve.cli.main import main
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.jobs.worker import WorkerState
from fluxserve.settings import Settings
from tests.fakes.bfl import FakeBfl
from tests.fakes.cloudflare import FakeWorkersAI
from tests.helpers import MAX_WAIT, PREFER_WAIT, TEST_TIMEOUT, wait_for
from tests.jobs_support import JOBS, LiveServer
from tests.servers import serve_in_thread

BFL_KEY = "bfl-test-key"


@pytest.fixture(scope="module")
def cloudflare() -> Iterator[tuple[FakeWorkersAI, str]]:
    fake = FakeWorkersAI()
    with serve_in_thread(fake.app) as url:  # type: ignore[arg-type]  # a Starlette app
        yield fake, url


@pytest.fixture(scope="module")
def bfl() -> Iterator[tuple[FakeBfl, str]]:
    fake = FakeBfl(BFL_KEY)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def serve(
    tmp_path: Path,
    cache_dir: Path,
    cloudflare: tuple[FakeWorkersAI, str],
    bfl: tuple[FakeBfl, str],
) -> Iterator[Any]:
    """Start fluxserve as `serve --model ...` would: engines made by the registry from settings."""
    cloudflare[0].reset()
    bfl[0].reset()
    with contextlib.ExitStack() as stack:

        def start(models: list[str], **overrides: Any) -> LiveServer:
            values: dict[str, Any] = {
                "data_dir": tmp_path / "data",
                "cache_dir": cache_dir,
                "models": models,
                "warmup": False,
                "allow_download": False,
                "cloudflare_account_id": cloudflare[0].account_id,
                "cloudflare_api_token": cloudflare[0].token,
                "cloudflare_base_url": f"{cloudflare[1]}/client/v4",
                "bfl_api_key": BFL_KEY,
                "bfl_base_url": bfl[1],
                "provider_timeout_seconds": TEST_TIMEOUT / 3,
                "max_wait_seconds": MAX_WAIT,
            }
            app = create_app(Settings(**{**values, **overrides}))
            url = stack.enter_context(serve_in_thread(app))
            server = stack.enter_context(LiveServer(app, url))
            workers = server.service.workers.values()
            wait_for(lambda: all(worker.state is not WorkerState.LOADING for worker in workers), "models loaded")
            return server

        yield start


def test_local_and_hosted_models_side_by_side_through_the_openai_client(
    serve: Any, cloudflare: tuple[FakeWorkersAI, str], bfl: tuple[FakeBfl, str]
) -> None:
    server = serve(["tiny-random", "cf:flux-2-dev", "bfl:flux-2-pro"])
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        for model in ("tiny-random", "cf:flux-2-dev", "bfl:flux-2-pro"):
            result = client.images.generate(model=model, prompt="a harbour", size="256x256", response_format="url")
            assert result.data is not None
            url = result.data[0].url
            assert url is not None
            image = httpx.get(url, timeout=TEST_TIMEOUT)
            assert image.status_code == 200
            assert Image.open(io.BytesIO(image.content)).size == (256, 256)
    assert cloudflare[0].calls == 1
    assert bfl[0].submit_count == 1


def test_models_lists_hosted_models_with_their_limits_and_whether_configured(serve: Any) -> None:
    server = serve(["tiny-random", "cf:flux-2-klein-4b", "bfl:flux-2-max"], bfl_api_key=None)
    cards = {card["id"]: card for card in server.http.get("/v1/models").json()["data"]}
    assert cards["tiny-random"]["provider"] == "local"
    assert cards["tiny-random"]["configured"] is None  # a local model needs no credentials
    klein = cards["cf:flux-2-klein-4b"]
    assert (klein["provider"], klein["configured"]) == ("cloudflare", True)
    assert klein["capabilities"]["max_reference_images"] == 4
    assert (klein["capabilities"]["min_steps"], klein["capabilities"]["max_steps"]) == (4, 4)
    assert klein["capabilities"]["max_side"] == 1920
    unconfigured = server.http.get("/v1/models/bfl:flux-2-max").json()
    assert (unconfigured["provider"], unconfigured["configured"]) == ("bfl", False)
    assert unconfigured["capabilities"]["max_reference_images"] == 8  # known without credentials
    assert unconfigured["capabilities"]["safety_tolerance"] is True
    assert klein["capabilities"]["safety_tolerance"] is False
    refused = server.http.post("/v1/images/generations", json={"model": "bfl:flux-2-max", "prompt": "x"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_unavailable"


def test_a_provider_runs_its_configured_number_of_jobs_at_once_and_cancel_stops_polling(
    serve: Any, bfl: tuple[FakeBfl, str]
) -> None:
    fake = bfl[0]
    fake.reset(pending_polls=100_000)  # every task stays Pending until its job is canceled
    server = serve(["bfl:flux-2-klein-4b"], bfl_concurrency=3)
    body = {"model": "bfl:flux-2-klein-4b", "prompt": "a lighthouse", "size": "64x64"}
    jobs = [server.submit(body) for _ in range(4)]
    wait_for(lambda: fake.submit_count == 3, "three tasks at BFL")
    states = [server.job(job["id"]) for job in jobs]
    assert [state["status"] for state in states] == ["running", "running", "running", "queued"]
    assert states[3]["position"] == 1
    wait_for(lambda: server.job(jobs[0]["id"]).get("progress", {}).get("stage") == "polling", "polling")

    for job in reversed(jobs):  # the queued one first, so that no thread it frees picks it up
        assert server.http.post(f"{JOBS}/{job['id']}/cancel").status_code in (200, 202)
    for job in jobs:
        canceled = server.wait_status(job["id"], "canceled")
        if job is not jobs[3]:  # the three that were at BFL say what canceling cannot undo
            assert "may still finish and bill" in canceled["error"]["message"]
    assert fake.submit_count == 3  # the queued one never reached BFL
    polls = sum(task.polls for task in fake.tasks.values())
    time.sleep(1.0)
    assert sum(task.polls for task in fake.tasks.values()) == polls  # polling stopped


def test_usage_records_hosted_cost_and_megapixels(serve: Any) -> None:
    server = serve(["cf:flux-2-dev"])
    done = server.submit(
        {"model": "cf:flux-2-dev", "prompt": "a fox", "size": "1024x1024", "steps": 25},
        headers=PREFER_WAIT,
    )
    assert done["status"] == "succeeded"
    assert done["usage"]["output_megapixels"] == 1.0
    assert done["usage"]["cost_usd"] == pytest.approx(0.041, abs=1e-3)  # the documented example
    [row] = server.http.get("/v1/usage").json()["data"]
    assert row["key_id"] is None  # an open server: work done without a key
    assert row["model"] == "cf:flux-2-dev"
    assert row["cost_usd"] == pytest.approx(done["usage"]["cost_usd"])


def test_the_cli_generates_with_a_hosted_model_from_the_environment(
    tmp_path: Path,
    cloudflare: tuple[FakeWorkersAI, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    engines: dict[str, DiffusersEngine],
) -> None:
    fake, url = cloudflare
    fake.reset()
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", fake.account_id)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", fake.token)
    monkeypatch.setenv("FLUXSERVE_CLOUDFLARE_BASE_URL", f"{url}/client/v4")
    target = tmp_path / "fox.png"
    code = main(["generate", "a fox", "--model", "cf:flux-2-klein-4b", "--size", "512x384", "-o", str(target)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "cf:flux-2-klein-4b on cloudflare: 512x384" in out
    assert "cost $" in out
    with Image.open(target) as image:
        assert image.size == (512, 384)
    assert fake.calls == 1
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    assert main(["generate", "a fox", "--model", "cf:flux-2-klein-4b", "-o", str(target)]) == 1
    assert "needs cloudflare_account_id and cloudflare_api_token" in capsys.readouterr().err


def test_models_of_one_provider_share_its_limit_of_tasks_in_flight(serve: Any, bfl: tuple[FakeBfl, str]) -> None:
    fake = bfl[0]
    fake.reset(pending_polls=100_000)
    server = serve(["bfl:flux-2-pro", "bfl:flux-2-klein-4b"], bfl_concurrency=2)
    jobs = [
        server.submit({"model": model, "prompt": "a kite", "size": "64x64"})
        for model in ("bfl:flux-2-pro", "bfl:flux-2-pro", "bfl:flux-2-klein-4b")
    ]
    wait_for(lambda: fake.submit_count == 2, "two tasks at BFL")
    wait_for(lambda: server.job(jobs[2]["id"])["status"] == "running")  # its model's thread is free...
    time.sleep(0.5)
    assert fake.submit_count == 2  # ...but BFL's two slots are taken: it waits
    for job in reversed(jobs):
        server.http.post(f"{JOBS}/{job['id']}/cancel")
    for job in jobs:
        server.wait_status(job["id"], "canceled")
    assert fake.submit_count == 2


def test_a_hosted_job_interrupted_by_a_restart_is_not_sent_again(
    tmp_path: Path, cache_dir: Path, bfl: tuple[FakeBfl, str]
) -> None:
    """A restart re-runs interrupted local jobs; a hosted one may already be billed, so it fails instead."""
    fake, url = bfl
    fake.reset(pending_polls=100_000)
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_dir=cache_dir,
        models=["bfl:flux-2-klein-4b"],
        warmup=False,
        bfl_api_key=BFL_KEY,
        bfl_base_url=url,
        bfl_concurrency=1,
    )
    body = {"model": "bfl:flux-2-klein-4b", "prompt": "a tide pool", "size": "64x64"}
    app = create_app(settings)
    with serve_in_thread(app) as first_url, LiveServer(app, first_url) as first:
        started, waiting = first.submit(body), first.submit(body)
        wait_for(lambda: fake.submit_count == 1, "one task at BFL")
        assert first.job(waiting["id"])["status"] == "queued"
    fake.pending_polls = 1  # from now on BFL finishes its tasks

    app = create_app(settings)
    with serve_in_thread(app) as second_url, LiveServer(app, second_url) as second:
        failed = second.wait_status(started["id"], "failed")
        assert failed["error"]["type"] == "interrupted"
        assert "not sent again" in failed["error"]["message"]
        assert second.wait_status(waiting["id"], "succeeded")["status"] == "succeeded"
    assert fake.submit_count == 2  # the interrupted job was not submitted twice
