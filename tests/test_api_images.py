"""The images endpoints in-process: request forms, responses, files, and the job behind each."""

from __future__ import annotations

import base64
import io
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fluxserve.api.deps import Services
from fluxserve.imaging.encode import ImageFormat, read_parameters
from fluxserve.jobs.models import JobStatus
from fluxserve.storage.signing import UrlSigner
from tests.helpers import photo, png_bytes, wait_for

SMALL = {"size": "64x64"}


def context(client: TestClient) -> Services:
    ctx: Services = client.app.state.services  # type: ignore[attr-defined]
    return ctx


def generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/images/generations", json={"prompt": "a red fox", **SMALL, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def image_of(item: dict[str, Any]) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def test_generation_answers_in_openai_shape_with_seed_and_job_id(client: TestClient) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "a red fox", "size": "96x64", "seed": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "image.generation"
    assert body["id"] == response.headers["x-job-id"]
    assert body["model"] == "tiny-random"
    assert body["size"] == "96x64"
    assert body["output_format"] == "png"
    assert isinstance(body["created"], int)
    [item] = body["data"]
    assert item["seed"] == 7
    assert item["revised_prompt"] == "a red fox"
    assert "url" not in item
    image = image_of(item)
    assert image.format == "PNG"
    assert image.size == (96, 64)
    assert body["usage"] == {"input_megapixels": 0.0, "output_megapixels": 0.0059, "steps": 4, "images": 1}


def test_job_is_recorded_with_its_resolved_request(client: TestClient) -> None:
    body = generate(client, seed=11, user="alice")
    job = context(client).jobs.get(body["id"])
    assert job.status is JobStatus.SUCCEEDED
    assert job.spec.seed == 11
    assert job.spec.user == "alice"
    assert (job.spec.width, job.spec.height, job.spec.steps) == (64, 64, 4)
    assert job.started_at is not None
    assert job.finished_at is not None
    assert job.finished_at >= job.started_at >= job.created_at
    assert [o.seed for o in job.outputs] == [11]


def test_same_seed_gives_identical_bytes_and_different_seeds_differ(client: TestClient) -> None:
    first = generate(client, seed=5)["data"][0]["b64_json"]
    again = generate(client, seed=5)["data"][0]["b64_json"]
    other = generate(client, seed=6)["data"][0]["b64_json"]
    assert first == again
    assert first != other


def test_several_images_each_reproduce_alone_from_their_seed(client: TestClient) -> None:
    body = generate(client, n=3, seed=100)
    assert [item["seed"] for item in body["data"]] == [100, 101, 102]
    assert body["usage"]["images"] == 3
    alone = generate(client, seed=102)["data"][0]["b64_json"]
    assert alone == body["data"][2]["b64_json"]


def test_image_metadata_carries_the_parameters(client: TestClient) -> None:
    item = generate(client, seed=3)["data"][0]
    parameters = read_parameters(base64.b64decode(item["b64_json"]))
    assert parameters is not None
    assert parameters["seed"] == 3
    assert parameters["prompt"] == "a red fox"


@pytest.mark.parametrize(("fmt", "media"), [("png", "PNG"), ("jpeg", "JPEG"), ("jpg", "JPEG"), ("webp", "WEBP")])
def test_output_formats(client: TestClient, fmt: str, media: str) -> None:
    body = generate(client, output_format=fmt, output_compression=50)
    assert body["output_format"] == ("jpeg" if fmt == "jpg" else fmt)
    assert image_of(body["data"][0]).format == media


def test_url_response_serves_the_file_with_type_and_caching(make_app: Any, storage: dict[str, Any]) -> None:
    with TestClient(make_app(**storage)) as client:
        body = generate(client, response_format="url", output_format="webp", n=2)
        urls = [item["url"] for item in body["data"]]
        assert urlsplit(urls[0]).path == f"/v1/images/files/{body['id']}/0.webp"
        for index, url in enumerate(urls):
            response = client.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"] == "image/webp"
            assert "immutable" in response.headers["cache-control"]
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-length"] == str(len(response.content))
            assert Image.open(io.BytesIO(response.content)).size == (64, 64)
            assert response.content == context(client).files.read_output(body["id"], index, ImageFormat.WEBP)
    assert "b64_json" not in body["data"][0]


def test_b64_json_response_reads_the_stored_image(make_app: Any, storage: dict[str, Any]) -> None:
    with TestClient(make_app(**storage)) as client:
        body = generate(client, seed=8)
        stored = context(client).files.read_output(body["id"], 0, ImageFormat.PNG)
    assert base64.b64decode(body["data"][0]["b64_json"]) == stored


def test_public_url_setting_prefixes_result_urls(make_app: Any) -> None:
    with TestClient(make_app(public_url="https://images.example.com/flux/")) as client:
        url = generate(client, response_format="url")["data"][0]["url"]
    assert url.startswith("https://images.example.com/flux/v1/images/files/job_")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/images/files/job_AAAAAAAAAAAAAAAAAAAAAAAA/0.png",  # well-formed, unknown
        "/v1/images/files/..%2f..%2fjobs.sqlite3/0.png",
        "/v1/images/files/{job}/5.png",  # index past the outputs
        "/v1/images/files/{job}/0.jpg",  # wrong extension
        "/v1/images/files/{job}/..%2f..%2fjobs.sqlite3",
        "/v1/images/files/{job}/0.png.tmp",
    ],
)
def test_unknown_or_crafted_file_paths_are_404(make_app: Any, storage: dict[str, Any], path: str) -> None:
    """Even with a valid signature for the path (the server's own key signs it here)."""
    with TestClient(make_app(**storage)) as client:
        job = generate(client, response_format="url")["id"]
        signer: UrlSigner = client.app.state.services.signer  # type: ignore[attr-defined]
        response = client.get(signer.sign(path.format(job=job)))
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_link_whose_image_is_gone_from_the_store_is_404(make_app: Any, storage: dict[str, Any]) -> None:
    with TestClient(make_app(**storage)) as client:
        body = generate(client, response_format="url")
        context(client).files.blobs.delete_prefix(f"outputs/{body['id']}/")  # removed behind the server's back
        response = client.get(body["data"][0]["url"])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_reference_system_multipart_with_input_images(client: TestClient) -> None:
    files = [
        ("input_image_0", ("a.png", png_bytes(photo(128, 96, 1)), "image/png")),
        ("input_image_1", ("b.png", png_bytes(photo(96, 96, 2)), "image/png")),
    ]
    data = {"prompt": "the cat from image 1 on the sofa from image 2", "steps": "4", "width": "64", "height": "80"}
    response = client.post("/v1/images/generations", data=data, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == "64x80"
    job = context(client).jobs.get(body["id"])
    assert job.spec.references == 2
    assert body["usage"]["input_megapixels"] == round((128 * 96 + 96 * 96) / 1024**2, 4)


def test_reference_system_json_with_images_data_urls(client: TestClient) -> None:
    body = generate(client, images=[data_url(photo(80, 80, 3)), data_url(photo(64, 128, 4))])
    assert context(client).jobs.get(body["id"]).spec.references == 2


def test_bfl_style_input_image_fields(client: TestClient) -> None:
    raw = base64.b64encode(png_bytes(photo(64, 64, 5))).decode()
    body = generate(client, input_image=raw, input_image_2=data_url(photo(64, 64, 6)))
    assert context(client).jobs.get(body["id"]).spec.references == 2


def test_reference_system_input_alias_and_object_prompt(client: TestClient) -> None:
    prompt = {
        "scene": "a harbour at dawn",
        "subjects": [{"type": "boat", "description": "a red fishing boat"}],
        "color_palette": ["#112233", "#AABBCC"],
    }
    response = client.post("/v1/images/generations", json={"input": prompt, **SMALL})
    assert response.status_code == 200, response.text
    revised = json.loads(response.json()["data"][0]["revised_prompt"])
    assert revised["scene"] == "a harbour at dawn"
    assert revised["subjects"][0]["description"] == "a red fishing boat"
    assert revised["color_palette"] == ["#112233", "#AABBCC"]


def test_multipart_prompt_may_be_a_json_object(client: TestClient) -> None:
    prompt = '{"scene": "a desert", "subjects": [{"description": "a camel"}]}'
    response = client.post("/v1/images/generations", data={"prompt": prompt, **SMALL})
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["data"][0]["revised_prompt"])["scene"] == "a desert"


def test_flux_controls_steps_and_guidance(client: TestClient) -> None:
    body = generate(client, model="tiny-random-base", steps=3, guidance=2.5, seed=1)
    job = context(client).jobs.get(body["id"])
    assert (job.spec.steps, job.spec.guidance) == (3, 2.5)
    assert body["usage"]["steps"] == 3


@pytest.mark.parametrize(("quality", "steps"), [("low", 25), ("medium", 50), ("auto", 50), ("high", 75), ("max", 100)])
def test_quality_is_a_step_preset(client: TestClient, quality: str, steps: int) -> None:
    caps = context(client).jobs.capabilities("tiny-random-base")
    assert caps.default_steps == 50
    from fluxserve.api.requests import steps_for_quality

    assert steps_for_quality(quality, caps) == steps


def test_quality_on_the_wire_sets_steps(client: TestClient) -> None:
    body = generate(client, model="tiny-random-base", quality="low", size="64x64")
    assert body["usage"]["steps"] == 25
    assert body["quality"] == "low"
    fixed = generate(client, quality="high")
    assert fixed["usage"]["steps"] == 4  # step-distilled: always its fixed steps


def test_edits_with_one_and_several_images(client: TestClient) -> None:
    one = client.post(
        "/v1/images/edits",
        data={"prompt": "make it night", "size": "64x64"},
        files={"image": ("a.png", png_bytes(photo(64, 64, 1)), "image/png")},
    )
    assert one.status_code == 200, one.text
    assert one.json()["object"] == "image.edit"
    several = client.post(
        "/v1/images/edits",
        data={"prompt": "both together"},
        files=[
            ("image[]", ("a.png", png_bytes(photo(96, 64, 1)), "image/png")),
            ("image[]", ("b.png", png_bytes(photo(64, 64, 2)), "image/png")),
        ],
    )
    assert several.status_code == 200, several.text
    body = several.json()
    assert body["size"] == "96x64"  # auto size follows the first image
    assert context(client).jobs.get(body["id"]).spec.references == 2


def test_size_auto_without_references_is_the_model_default(client: TestClient) -> None:
    body = generate(client, model="tiny-random", size="auto", response_format="url")
    assert body["size"] == "1024x1024"


def test_models_list_and_one_model_with_capabilities(client: TestClient) -> None:
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["tiny-random", "tiny-random-base", "tiny-random-flux1"]
    model = client.get("/v1/models/tiny-random-base").json()
    assert model["status"] == "ready"
    caps = model["capabilities"]
    assert (caps["min_steps"], caps["default_steps"], caps["guidance"], caps["max_reference_images"]) == (
        1,
        50,
        True,
        4,
    )
    flux1 = client.get("/v1/models/tiny-random-flux1").json()["capabilities"]
    assert flux1["max_reference_images"] == 0
    missing = client.get("/v1/models/flux.9")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_health_is_public_and_says_little(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}  # no version, no models: nothing to aim at


def test_ready_once_models_are_loaded(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_ready_is_503_while_a_model_loads_then_200(make_settings: Any, options: Any) -> None:
    from fluxserve.api.app import create_app
    from fluxserve.engines.diffusers_engine import DiffusersEngine

    settings = make_settings(models=["tiny-random"], warmup=True)
    with TestClient(create_app(settings, {"tiny-random": DiffusersEngine("tiny-random", options)})) as client:
        first = client.get("/ready")
        if first.status_code == 503:  # loading (it may also have finished already)
            assert first.headers["retry-after"] == "5"
            assert first.json()["error"]["type"] == "service_unavailable"
            refused = client.post("/v1/images/generations", json={"prompt": "x"})
            assert refused.status_code in (200, 503)
        wait_for(lambda: client.get("/ready").status_code == 200, "the model loaded")
        assert client.get("/ready").status_code == 200


def test_request_id_on_every_response(client: TestClient) -> None:
    ok = client.get("/health")
    assert ok.headers["x-request-id"].startswith("req_")
    error = client.post("/v1/images/generations", content=b"{", headers={"content-type": "application/json"})
    assert error.headers["x-request-id"].startswith("req_")
    mine = client.get("/health", headers={"x-request-id": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    odd = client.get("/health", headers={"x-request-id": "bad id\twith spaces"})
    assert odd.headers["x-request-id"].startswith("req_")
