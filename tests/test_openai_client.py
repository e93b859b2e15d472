"""The official ``openai`` client against a real fluxserve on loopback: our compatibility test."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from fluxserve.api.app import create_app
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.settings import Settings
from tests.helpers import TEST_TIMEOUT, photo, png_bytes
from tests.servers import serve_in_thread


@pytest.fixture(scope="module")
def base_url(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, engines: dict[str, DiffusersEngine]
) -> Iterator[str]:
    models = ["tiny-random", "tiny-random-base"]
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("openai-data"), cache_dir=cache_dir, models=models, warmup=False
    )
    with serve_in_thread(create_app(settings, {m: engines[m] for m in models})) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused-on-loopback", max_retries=0) as opened:
        yield opened


def decoded(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generate_b64_json(client: openai.OpenAI) -> None:
    result = client.images.generate(model="tiny-random", prompt="a lighthouse", size="128x64", n=1)
    assert result.created > 0
    assert result.data is not None
    image = decoded(result.data[0].b64_json)
    assert image.size == (128, 64)
    assert result.data[0].revised_prompt == "a lighthouse"
    assert result.output_format == "png"
    assert result.size == "128x64"


def test_generate_url_and_fetch_it(client: openai.OpenAI, base_url: str) -> None:
    result = client.images.generate(model="tiny-random", prompt="a boat", size="64x64", response_format="url")
    assert result.data is not None
    url = result.data[0].url
    assert url is not None
    assert url.startswith(base_url)
    response = httpx.get(url, timeout=TEST_TIMEOUT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"


def test_several_images_with_their_seeds(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="tiny-random", prompt="three cats", size="64x64", n=3, extra_body={"seed": 40}
    )
    assert result.data is not None
    assert len(result.data) == 3
    assert [item.model_extra["seed"] for item in result.data if item.model_extra] == [40, 41, 42]
    assert len({item.b64_json for item in result.data}) == 3


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_each_output_format(client: openai.OpenAI, fmt: str) -> None:
    result = client.images.generate(
        model="tiny-random", prompt="a kite", size="64x64", output_format=fmt, output_compression=80
    )
    assert result.data is not None
    assert decoded(result.data[0].b64_json).format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    assert result.output_format == fmt


def test_flux_fields_through_extra_body(client: openai.OpenAI) -> None:
    first = client.images.generate(
        model="tiny-random-base",
        prompt="a bridge",
        size="64x64",
        extra_body={"seed": 9, "steps": 3, "guidance": 2.0},
    )
    again = client.images.generate(
        model="tiny-random-base",
        prompt="a bridge",
        size="64x64",
        extra_body={"seed": 9, "steps": 3, "guidance": 2.0},
    )
    assert first.data is not None
    assert again.data is not None
    assert first.data[0].b64_json == again.data[0].b64_json
    assert first.usage is not None
    assert first.usage.model_extra is not None
    assert first.usage.model_extra["steps"] == 3


def test_references_through_extra_body(client: openai.OpenAI) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(photo(64, 64))).decode()
    result = client.images.generate(
        model="tiny-random", prompt="this cat", size="64x64", extra_body={"images": [data_url]}
    )
    assert result.usage is not None
    assert result.usage.model_extra is not None
    assert result.usage.model_extra["input_megapixels"] > 0


def test_edit_with_one_image(client: openai.OpenAI) -> None:
    result = client.images.edit(
        model="tiny-random",
        image=("cat.png", png_bytes(photo(96, 64, 1)), "image/png"),
        prompt="the cat at night",
    )
    assert result.data is not None
    assert decoded(result.data[0].b64_json).size == (96, 64)


def test_edit_with_several_images(client: openai.OpenAI) -> None:
    result = client.images.edit(
        model="tiny-random",
        image=[
            ("a.png", png_bytes(photo(64, 64, 1)), "image/png"),
            ("b.png", png_bytes(photo(64, 64, 2)), "image/png"),
            ("c.png", png_bytes(photo(64, 64, 3)), "image/png"),
        ],
        prompt="all three together",
        size="64x64",
    )
    assert result.data is not None
    assert result.usage is not None
    assert result.usage.model_extra is not None
    assert result.usage.model_extra["input_megapixels"] == round(3 * 64 * 64 / 1024**2, 4)


def test_a_bad_size_raises_bad_request_with_the_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model="tiny-random", prompt="x", size="100x100")
    error = raised.value
    assert error.status_code == 400
    assert error.param == "width"
    assert "multiple of 16" in error.message
    assert error.request_id is not None


def test_an_unknown_model_raises_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.images.generate(model="dall-e-3", prompt="x")
    assert raised.value.code == "model_not_found"
    assert "tiny-random" in raised.value.message


def test_models_through_the_client(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == ["tiny-random", "tiny-random-base"]
    assert client.models.retrieve("tiny-random-base").id == "tiny-random-base"


def test_streaming_generation_with_partial_images(client: openai.OpenAI) -> None:
    stream = client.images.generate(
        model="tiny-random-base",
        prompt="a harbour at dawn",
        size="128x64",
        stream=True,
        partial_images=2,
        extra_body={"steps": 6, "seed": 3},
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    partials = [event for event in events if event.type == "image_generation.partial_image"]
    assert [event.partial_image_index for event in partials] == [0, 1]
    completed = events[-1]
    assert completed.type == "image_generation.completed"
    assert decoded(completed.b64_json).size == (128, 64)
    assert completed.size == "128x64"
    assert completed.output_format == "png"
    assert completed.usage.model_extra is not None
    assert completed.usage.model_extra["steps"] == 6
    same = client.images.generate(
        model="tiny-random-base", prompt="a harbour at dawn", size="128x64", extra_body={"steps": 6, "seed": 3}
    )
    assert same.data is not None
    assert same.data[0].b64_json == completed.b64_json  # streaming changes nothing in the image


def test_streaming_edit(client: openai.OpenAI) -> None:
    stream = client.images.edit(
        model="tiny-random",
        image=("cat.png", png_bytes(photo(64, 64, 1)), "image/png"),
        prompt="the cat in the rain",
        stream=True,
        partial_images=1,
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    completed = events[-1]
    assert completed.type == "image_edit.completed"
    assert decoded(completed.b64_json).size == (64, 64)


def test_a_streaming_request_that_cannot_stream_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model="tiny-random", prompt="x", size="64x64", n=2, stream=True)
    assert raised.value.param == "n"


def test_idempotency_key_through_the_client(client: openai.OpenAI) -> None:
    key = {"Idempotency-Key": "client-retry-1"}
    first = client.images.generate(model="tiny-random", prompt="once", size="64x64", extra_headers=key)
    again = client.images.generate(model="tiny-random", prompt="once", size="64x64", extra_headers=key)
    assert first.model_extra is not None
    assert again.model_extra is not None
    assert first.model_extra["id"] == again.model_extra["id"]
    with pytest.raises(openai.ConflictError) as raised:
        client.images.generate(model="tiny-random", prompt="twice", size="64x64", extra_headers=key)
    assert raised.value.code == "idempotency_key_reused"
