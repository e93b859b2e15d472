"""Masked edits over HTTP: the official openai client's ``images.edit(mask=...)``, JSON bodies, jobs,
every refusal, and a stored masked job that runs again after a restart."""

from __future__ import annotations

import base64
import io
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from fluxserve.api.app import create_app
from fluxserve.db import DATABASE_FILE
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.imaging.encode import read_parameters
from fluxserve.settings import Settings
from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, photo, png_bomb, png_bytes, wait_for
from tests.servers import serve_in_thread

SIZE = (96, 64)
BOX = (16, 16, 48, 48)
SOURCE = png_bytes(photo(*SIZE))


def mask_png(size: tuple[int, int] = SIZE, *, alpha: bool = True) -> bytes:
    """OpenAI's mask: opaque, with the area to change transparent."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), BOX)
    return png_bytes(mask if alpha else mask.convert("RGB"))


def inside() -> np.ndarray:
    marked = np.zeros((SIZE[1], SIZE[0]), dtype=bool)
    marked[BOX[1] : BOX[3], BOX[0] : BOX[2]] = True
    return marked


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def pixels(b64: str | None) -> np.ndarray:
    assert b64 is not None
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


@pytest.fixture(scope="module")
def base_url(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, engines: dict[str, DiffusersEngine]
) -> Iterator[str]:
    models = ["tiny-random", "tiny-random-dev", "tiny-random-flux1"]
    settings = Settings(data_dir=tmp_path_factory.mktemp("masks"), cache_dir=cache_dir, models=models, warmup=False)
    with serve_in_thread(create_app(settings, {m: engines[m] for m in models})) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=TEST_TIMEOUT) as opened:
        yield opened


MASK_MODELS = ["tiny-random", "tiny-random-flux1"]
"""Served models with masked editing: FLUX.2 [klein] and FLUX.1 [dev]."""


@pytest.mark.parametrize("model", MASK_MODELS)
def test_openai_client_masked_edit(client: openai.OpenAI, model: str) -> None:
    result = client.images.edit(
        model=model,
        image=("photo.png", SOURCE, "image/png"),
        mask=("mask.png", mask_png(), "image/png"),
        prompt="a red ball",
        extra_body={"strength": 0.7, "seed": 5},
    )
    assert result.data is not None
    assert result.size == "96x64"
    out, source = pixels(result.data[0].b64_json), np.asarray(photo(*SIZE))
    assert (out[~inside()] == source[~inside()]).all()
    assert (out[inside()] != source[inside()]).any()
    parameters = read_parameters(base64.b64decode(result.data[0].b64_json or ""))
    assert parameters is not None
    assert parameters["strength"] == 0.7
    assert parameters["mask"] is True


@pytest.mark.parametrize("model", MASK_MODELS)
def test_strength_zero_returns_the_image_unchanged(client: openai.OpenAI, model: str) -> None:
    result = client.images.edit(
        model=model,
        image=("photo.png", SOURCE, "image/png"),
        mask=("mask.png", mask_png(), "image/png"),
        prompt="anything",
        extra_body={"strength": 0},
    )
    assert result.data is not None
    assert (pixels(result.data[0].b64_json) == np.asarray(photo(*SIZE))).all()


def test_a_black_and_white_mask_in_a_json_job(base_url: str) -> None:
    white_changes = Image.new("L", SIZE, 0)
    white_changes.paste(255, BOX)
    body = {
        "model": "tiny-random",
        "prompt": "a red ball",
        "images": [data_url(SOURCE)],
        "mask": data_url(png_bytes(white_changes)),
        "strength": 0.5,
        "seed": 1,
        "steps": 4,
        "n": 2,
    }
    response = httpx.post(f"{base_url}/v1/jobs", json=body, headers=PREFER_WAIT, timeout=TEST_TIMEOUT)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded"
    assert job["request"]["mask"] is True
    assert (job["request"]["strength"], job["request"]["steps"]) == (0.5, 4)
    assert job["usage"]["steps"] == 2 * 2  # the steps that ran: half of 4, for each of the two images
    assert (job["request"]["width"], job["request"]["height"]) == SIZE


def test_a_plain_edit_is_unchanged(base_url: str) -> None:
    body = {"model": "tiny-random", "prompt": "a", "images": [data_url(SOURCE)], "size": "64x64"}
    job = httpx.post(f"{base_url}/v1/jobs", json=body, headers=PREFER_WAIT, timeout=TEST_TIMEOUT).json()
    assert job["request"]["mask"] is False
    assert job["request"].get("strength") is None  # unset fields are left out


def test_models_say_which_take_masks(client: openai.OpenAI, base_url: str) -> None:
    cards = {card["id"]: card for card in httpx.get(f"{base_url}/v1/models").json()["data"]}
    assert cards["tiny-random"]["capabilities"]["masks"] is True
    assert cards["tiny-random-flux1"]["capabilities"]["masks"] is True
    assert cards["tiny-random-dev"]["capabilities"]["masks"] is False


def test_flux1_edits_one_image_only_with_a_mask_or_strength(client: openai.OpenAI) -> None:
    """FLUX.1 takes no reference images: an image is the one it edits, so it needs a mask or strength."""
    plain = edit_refusal(client, model="tiny-random-flux1", mask=openai.NOT_GIVEN)
    assert param_of(plain) == "image"
    assert "send a mask or strength" in plain.message
    two = edit_refusal(client, model="tiny-random-flux1", image=[("a.png", SOURCE, "image/png")] * 2)
    assert param_of(two) == "image"
    assert "edits one image" in two.message
    whole = client.images.edit(
        model="tiny-random-flux1",
        image=("photo.png", SOURCE, "image/png"),
        prompt="a red ball",
        extra_body={"strength": 0.5, "seed": 2, "steps": 4},
    )
    assert whole.data is not None
    assert whole.size == "96x64"


def edit_refusal(client: openai.OpenAI, **overrides: Any) -> openai.BadRequestError:
    arguments: dict[str, Any] = {
        "model": "tiny-random",
        "image": ("photo.png", SOURCE, "image/png"),
        "mask": ("mask.png", mask_png(), "image/png"),
        "prompt": "a",
        **overrides,
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(**arguments)
    return caught.value


def param_of(error: openai.BadRequestError) -> str:
    body = error.body
    assert isinstance(body, dict)
    return str(body["param"])


REFUSALS: dict[str, tuple[dict[str, Any], str, str]] = {
    "model without masks": ({"model": "tiny-random-dev"}, "mask", "models here that take one: tiny-random"),
    "wrong size": ({"mask": ("m.png", mask_png((64, 64)), "image/png")}, "mask", "size of the first image, 96x64"),
    "no alpha, not black and white": (
        {"mask": ("m.png", png_bytes(photo(*SIZE, seed=4)), "image/png")},
        "mask",
        "not plain black and white",
    ),
    "fully opaque": (
        {"mask": ("m.png", png_bytes(Image.new("RGBA", SIZE, (9, 9, 9, 255))), "image/png")},
        "mask",
        "marks nothing",
    ),
    "decompression bomb": ({"mask": ("m.png", png_bomb(30_000), "image/png")}, "mask", "megapixels"),
    "not an image": ({"mask": ("m.png", b"hello" * 50, "image/png")}, "mask", "not an image"),
    "strength above 1": ({"extra_body": {"strength": 1.5}}, "strength", "outside 0-1"),
    "strength not a number": ({"extra_body": {"strength": "much"}}, "strength", "strength"),
    "a size other than the image's": ({"size": "64x64"}, "size", "96x64"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_refusals_name_the_field(client: openai.OpenAI, case: str) -> None:
    overrides, param, words = REFUSALS[case]
    error = edit_refusal(client, **overrides)
    assert param_of(error) == param
    assert words in error.message


def test_strength_without_an_image_is_refused(base_url: str) -> None:
    body = {"model": "tiny-random", "prompt": "a", "size": "64x64", "strength": 0.5}
    response = httpx.post(f"{base_url}/v1/images/generations", json=body, timeout=TEST_TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "strength"


def test_strength_for_a_model_without_masks_is_refused(base_url: str) -> None:
    body = {"model": "tiny-random-dev", "prompt": "a", "images": [data_url(SOURCE)], "strength": 0.5}
    response = httpx.post(f"{base_url}/v1/images/edits", json=body, timeout=TEST_TIMEOUT)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "strength"
    assert "tiny-random" in error["message"]


def test_a_json_mask_that_is_not_base64_names_mask(base_url: str) -> None:
    body = {"model": "tiny-random", "prompt": "a", "images": [data_url(SOURCE)], "mask": "@@@"}
    response = httpx.post(f"{base_url}/v1/images/edits", json=body, timeout=TEST_TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "mask"


def test_a_stored_masked_job_runs_again_after_a_restart(
    make_app: Callable[..., FastAPI], make_settings: Callable[..., Settings]
) -> None:
    """The mask is stored with the job: a job left running by a killed server runs again from the
    stored spec and files, and gives the same image."""
    body = {"prompt": "a red ball", "images": [data_url(SOURCE)], "mask": data_url(mask_png()), "seed": 9}
    with TestClient(make_app()) as first:
        job = first.post("/v1/jobs", json=body, headers=PREFER_WAIT).json()
        assert job["status"] == "succeeded", job
        before = first.get(job["images"][0]["url"]).content
    data_dir = make_settings().data_dir
    assert (data_dir / "references" / job["id"] / "mask.png").is_file()
    with sqlite3.connect(data_dir / DATABASE_FILE) as db:  # as a kill -9 mid-run leaves it
        db.execute("UPDATE jobs SET status = 'running', outputs = '[]', usage = NULL WHERE id = ?", (job["id"],))
    with TestClient(make_app()) as second:
        wait_for(lambda: second.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded", "the job to run again")
        again = second.get(f"/v1/jobs/{job['id']}").json()
        assert again["request"]["mask"] is True
        assert again["request"]["strength"] == 1.0
        assert second.get(again["images"][0]["url"]).content == before
