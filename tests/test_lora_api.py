"""LoRA adapters through the HTTP API: the loras field on every images endpoint, GET /v1/loras,
the job record and image metadata, refusals naming the field, and the official openai client."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from fluxserve.api.app import create_app
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.loras import LoraOptions
from fluxserve.imaging.encode import read_parameters
from fluxserve.jobs.models import JobSpec
from fluxserve.settings import Settings
from tests.helpers import MAX_WAIT, PREFER_WAIT, photo, png_bytes
from tests.servers import serve_in_thread

MODELS = ["tiny-random", "tiny-random-flux1"]
QUICK = {"prompt": "a lighthouse", "size": "256x256", "seed": 5}


@pytest.fixture(scope="module")
def lora_engines(options: EngineOptions, lora_dir: Path) -> Iterator[dict[str, DiffusersEngine]]:
    """Engines of their own, so the session's shared engines never hold an adapter."""
    loras = LoraOptions(directory=lora_dir, cache_size=2)
    made = {name: DiffusersEngine(name, EngineOptions(options.cache_dir, False, loras=loras)) for name in MODELS}
    for engine in made.values():
        engine.load()
    yield made
    for engine in made.values():
        engine.close()


def settings_for(data_dir: Path, cache_dir: Path, lora_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        cache_dir=cache_dir,
        models=MODELS,
        warmup=False,
        allow_download=False,
        lora_dir=lora_dir,
        lora_cache_size=2,
        max_wait_seconds=MAX_WAIT,
    )


@pytest.fixture
def api(
    tmp_path: Path, cache_dir: Path, lora_dir: Path, lora_engines: dict[str, DiffusersEngine]
) -> Iterator[TestClient]:
    app = create_app(settings_for(tmp_path / "data", cache_dir, lora_dir), lora_engines)
    with TestClient(app) as client:
        yield client


def image_bytes(response: Any) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def test_get_loras_lists_adapters_and_families(api: TestClient) -> None:
    body = api.get("/v1/loras").json()
    families = {card["id"]: card["family"] for card in body["data"]}
    assert families["style"] == "flux.2"
    assert families["flux1-style"] == "flux.1"
    assert families["more/third"] == "flux.2"
    assert "broken" not in families
    assert "not-a-lora" not in families
    assert (body["max_per_request"], body["min_scale"], body["max_scale"]) == (3, -2.0, 2.0)


def test_generation_with_loras_records_them_everywhere(api: TestClient) -> None:
    plain = image_bytes(api.post("/v1/images/generations", json=QUICK))
    loras = [{"name": "style", "scale": 0.8}, {"name": "ink", "scale": -0.5}]
    response = api.post("/v1/images/generations", json={**QUICK, "loras": loras})
    styled = image_bytes(response)
    assert styled != plain
    assert read_parameters(styled)["loras"] == loras  # type: ignore[index]
    assert "loras" not in read_parameters(plain)  # type: ignore[operator]
    job = api.get(f"/v1/jobs/{response.headers['x-job-id']}").json()
    assert job["request"]["loras"] == loras
    assert image_bytes(api.post("/v1/images/generations", json=QUICK)) == plain  # adapters off again


def test_edits_and_jobs_take_loras_as_json_and_multipart(api: TestClient) -> None:
    reference = png_bytes(photo(128, 128))
    loras = [{"name": "style", "scale": 1.0}]
    form = {"prompt": "make it blue", "size": "256x256", "seed": "3", "loras": json.dumps(loras)}
    edited = api.post("/v1/images/edits", data=form, files={"image": ("a.png", reference, "image/png")})
    plain = api.post(
        "/v1/images/edits", data={k: v for k, v in form.items() if k != "loras"}, files={"image": ("a.png", reference)}
    )
    assert image_bytes(edited) != image_bytes(plain)
    assert read_parameters(image_bytes(edited))["loras"] == loras  # type: ignore[index]
    job = api.post("/v1/jobs", json={**QUICK, "loras": loras}, headers=PREFER_WAIT).json()
    assert job["status"] == "succeeded", job
    assert job["request"]["loras"] == loras
    as_form = api.post("/v1/jobs", data={**form, "loras": json.dumps(loras)}, headers=PREFER_WAIT).json()
    assert as_form["request"]["loras"] == loras


@pytest.mark.parametrize(
    ("loras", "param", "says"),
    [
        ([{"name": "nothing-here"}], "loras[0].name", "unknown LoRA"),
        ([{"name": "../style"}], "loras[0].name", "unknown LoRA"),
        ([{"name": "flux1-style"}], "loras[0].name", "FLUX.1 adapter"),
        ([{"name": "broken"}], "loras[0].name", "not a readable"),
        ([{"name": "not-a-lora"}], "loras[0].name", "no LoRA weights"),
        ([{"name": "style", "scale": 3}], "loras[0].scale", "from -2 to 2"),
        ([{"name": "style", "scale": "high"}], "loras[0].scale", "loras"),
        ([{"name": "style", "weight": 1}], "loras[0].weight", "loras"),
        ([{"name": n} for n in ("style", "ink", "more/third", "misfit")], "loras", "at most 3"),
        ("style", "loras", "loras"),
    ],
)
def test_refusals_are_400s_naming_the_field(api: TestClient, loras: Any, param: str, says: str) -> None:
    response = api.post("/v1/images/generations", json={**QUICK, "loras": loras})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert says in error["message"]
    assert api.post("/v1/images/generations", json={**QUICK, "loras": [{"name": "style"}]}).status_code == 200


def test_a_multipart_loras_field_that_is_not_json_is_a_400(api: TestClient) -> None:
    response = api.post("/v1/images/generations", data={**QUICK, "seed": "5", "loras": "style:0.8"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "loras"


def test_an_adapter_the_model_cannot_take_fails_its_job_and_the_model_goes_on(api: TestClient) -> None:
    response = api.post("/v1/images/generations", json={**QUICK, "loras": [{"name": "misfit"}]})
    assert response.status_code == 400, response.text
    assert "does not fit tiny-random" in response.json()["error"]["message"]
    job = api.post("/v1/jobs", json={**QUICK, "loras": [{"name": "misfit"}]}, headers=PREFER_WAIT).json()
    assert job["status"] == "failed"
    assert job["error"]["type"] == "invalid_request"
    assert image_bytes(api.post("/v1/images/generations", json={**QUICK, "loras": [{"name": "style"}]}))


def test_flux1_model_takes_flux1_adapters(api: TestClient) -> None:
    body = {**QUICK, "model": "tiny-random-flux1"}
    plain = image_bytes(api.post("/v1/images/generations", json=body))
    styled = image_bytes(api.post("/v1/images/generations", json={**body, "loras": [{"name": "flux1-style"}]}))
    assert styled != plain
    refused = api.post("/v1/images/generations", json={**body, "loras": [{"name": "style"}]})
    assert refused.json()["error"]["param"] == "loras[0].name"


def test_jobs_stored_before_loras_existed_still_load() -> None:
    old = {
        "model": "tiny-random",
        "operation": "generation",
        "prompt": "p",
        "width": 256,
        "height": 256,
        "steps": 4,
        "guidance": None,
        "seed": 1,
        "n": 1,
        "output_format": "png",
        "output_compression": None,
        "response_format": "b64_json",
    }
    assert JobSpec.from_json(old).loras == ()
    spec = JobSpec.from_json({**old, "loras": [{"name": "style", "scale": 0.5}]})
    assert JobSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_the_openai_client_sends_loras_through_extra_body(
    tmp_path: Path, cache_dir: Path, lora_dir: Path, lora_engines: dict[str, DiffusersEngine]
) -> None:
    app = create_app(settings_for(tmp_path / "data", cache_dir, lora_dir), lora_engines)
    with serve_in_thread(app) as url, openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        loras = [{"name": "style", "scale": 0.7}]
        result = client.images.generate(
            model="tiny-random", prompt="a boat", size="256x256", extra_body={"seed": 2, "loras": loras}
        )
        assert result.data is not None
        assert result.data[0].b64_json is not None
        assert read_parameters(base64.b64decode(result.data[0].b64_json))["loras"] == loras  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as raised:
            client.images.generate(model="tiny-random", prompt="a boat", extra_body={"loras": [{"name": "nope"}]})
        assert raised.value.param == "loras[0].name"  # type: ignore[attr-defined]
