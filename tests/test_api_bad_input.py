"""Bad input: each case gets a clear 4xx in OpenAI's error shape, and the server keeps serving."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import photo, png_bomb, png_bytes

GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def jpeg_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    photo(width, height).save(buffer, "JPEG")
    return buffer.getvalue()


PNG = png_bytes(photo(64, 64))


@dataclass(frozen=True)
class Case:
    status: int
    param: str | None = None
    code: str | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    path: str = GENERATIONS
    method: str = "POST"


def body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a lighthouse", "size": "64x64", **fields}


def file(name: str, data: bytes = PNG, media: str = "image/png") -> tuple[str, tuple[str, bytes, str]]:
    return (name, ("upload", data, media))


CASES: dict[str, Case] = {
    "malformed json": Case(400, content=b'{"prompt": ', headers={"content-type": "application/json"}),
    "invalid utf-8": Case(400, content=b'{"prompt": "\xff\xfe"}', headers={"content-type": "application/json"}),
    "json array": Case(400, json=[1, 2]),
    "text/plain body": Case(415, content=b"prompt=a cat", headers={"content-type": "text/plain"}),
    "no content type": Case(415, content=b"{}"),
    "unknown field": Case(400, "colour", json=body(colour="red")),
    "missing prompt": Case(400, "prompt", json={"size": "64x64"}),
    "number as prompt": Case(400, "prompt", json=body(prompt=42)),
    "blank prompt": Case(400, "prompt", json=body(prompt="   ")),
    "prompt too long": Case(400, "prompt", json=body(prompt="x" * 10_001)),
    "structured prompt, bad hex": Case(
        400,
        "prompt.color_palette[0]",
        json=body(prompt={"scene": "a", "subjects": [{"description": "b"}], "color_palette": ["#12345G"]}),
    ),
    "size not WxH": Case(400, "size", json=body(size="big")),
    "absurd size": Case(400, "width", json=body(size="1000000x1000000")),
    "width not multiple of 16": Case(400, "width", json=body(size=None, width=250, height=256)),
    "width without height": Case(400, "height", json=body(size=None, width=256)),
    "size and width disagree": Case(400, json=body(size="64x64", width=128, height=128)),
    "n zero": Case(400, "n", json=body(n=0)),
    "n eleven": Case(400, "n", json=body(n=11)),
    "n as a string in json": Case(400, "n", json=body(n="2")),
    "steps on a distilled model": Case(400, "steps", json=body(steps=8)),
    "guidance on a distilled model": Case(400, "guidance", json=body(guidance=3.5)),
    "steps out of range": Case(400, "steps", json=body(model="tiny-random-base", steps=101)),
    "guidance out of range": Case(400, "guidance", json=body(model="tiny-random-base", guidance=99)),
    "negative seed": Case(400, "seed", json=body(seed=-1)),
    "seed too big": Case(400, "seed", json=body(seed=2**32)),
    "fractional seed": Case(400, "seed", json=body(seed=1.5)),
    "safety tolerance on a local model": Case(400, "safety_tolerance", json=body(safety_tolerance=2)),
    "form safety tolerance on a local model": Case(
        400, "safety_tolerance", data={"prompt": "a", "size": "64x64", "safety_tolerance": "2"}
    ),
    "job with safety tolerance on a local model": Case(
        400, "safety_tolerance", json=body(safety_tolerance=0), path="/v1/jobs"
    ),
    "edit with safety tolerance on a local model": Case(
        400, "safety_tolerance", data={"prompt": "a", "safety_tolerance": "5"}, files=[file("image")], path=EDITS
    ),
    "safety tolerance as a string in json": Case(400, "safety_tolerance", json=body(safety_tolerance="2")),
    "form safety tolerance not a number": Case(
        400, "safety_tolerance", data={"prompt": "a", "safety_tolerance": "lax"}
    ),
    "gif output": Case(400, "output_format", json=body(output_format="gif")),
    "compression 101": Case(400, "output_compression", json=body(output_compression=101)),
    "response_format xml": Case(400, "response_format", json=body(response_format="xml")),
    "unknown quality": Case(400, "quality", json=body(quality="ultra")),
    "quality and steps": Case(400, "quality", json=body(model="tiny-random-base", quality="high", steps=10)),
    "transparent background": Case(400, "background", json=body(background="transparent")),
    "stream of several images": Case(400, "n", json=body(stream=True, n=2)),
    "stream as url": Case(400, "response_format", json=body(stream=True, response_format="url")),
    "partial images without stream": Case(400, "partial_images", json=body(partial_images=2)),
    "four partial images": Case(400, "partial_images", json=body(stream=True, partial_images=4)),
    "negative partial images": Case(400, "partial_images", json=body(stream=True, partial_images=-1)),
    "stream not a boolean": Case(400, "stream", json=body(stream="yes")),
    "webhook to ftp": Case(400, "webhook_url", json=body(webhook_url="ftp://example.com/hook")),
    "webhook without a host": Case(400, "webhook_url", json=body(webhook_url="http:///hook")),
    "unknown webhook event": Case(
        400, "webhook_events", json=body(webhook_url="http://127.0.0.1:9/hook", webhook_events=["progress"])
    ),
    "webhook events without url": Case(400, "webhook_events", json=body(webhook_events=["completed"])),
    "unknown model": Case(404, "model", "model_not_found", json=body(model="flux.9-giant")),
    "references to flux.1": Case(400, "image", json=body(model="tiny-random-flux1", images=[b64(PNG)])),
    "more references than the model takes": Case(400, "image", json=body(images=[b64(PNG)] * 5)),
    "more images than the server takes": Case(400, "image", json=body(images=[b64(PNG)] * 11)),
    "reference given as a url": Case(400, "images[0]", json=body(images=["https://example.com/cat.png"])),
    "reference not base64": Case(400, "images[0]", json=body(images=["data:image/png;base64,@@@"])),
    "data url of text": Case(400, "input_image", json=body(input_image="data:text/plain;base64,aGk=")),
    "reference not an image": Case(400, "images[0]", "invalid_image", json=body(images=[b64(b"hello world" * 10)])),
    "decompression bomb": Case(400, "images[0]", "invalid_image", json=body(images=[b64(png_bomb(30_000))])),
    "truncated jpeg": Case(400, "input_image", "invalid_image", json=body(input_image=b64(jpeg_bytes(128, 128)[:600]))),
    "tiny reference": Case(400, "image[0]", "invalid_image", json=body(images=[b64(png_bytes(photo(16, 16)))])),
    "images and input_image mixed": Case(400, json=body(images=[b64(PNG)], input_image=b64(PNG))),
    "prompt and input": Case(400, "input", json=body(input="other")),
    "form n not a number": Case(400, "n", data={"prompt": "a", "n": "two"}),
    "form n zero": Case(400, "n", data={"prompt": "a", "n": "0", "size": "64x64"}),
    "form field twice": Case(400, "prompt", data={"prompt": ["a", "b"]}),
    "form seed not a number": Case(400, "seed", data={"prompt": "a", "seed": "1e3x"}),
    "form guidance nan": Case(400, "guidance", data={"prompt": "a", "guidance": "nan", "model": "tiny-random-base"}),
    "unexpected file field": Case(400, "photo", data={"prompt": "a"}, files=[file("photo")]),
    "image and input_image_0 mixed": Case(400, data={"prompt": "a"}, files=[file("image"), file("input_image_0")]),
    "non-image upload": Case(
        400,
        "input_image_0",
        "invalid_image",
        data={"prompt": "a"},
        files=[file("input_image_0", b"%PDF-1.4 not an image", "application/pdf")],
    ),
    "edit without an image": Case(400, "image", data={"prompt": "a", "size": "64x64"}, path=EDITS),
    "edit with a mask": Case(400, "mask", data={"prompt": "a"}, files=[file("image"), file("mask")], path=EDITS),
    "malformed multipart": Case(
        400, content=b"--xyz\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=xyz"}
    ),
    "multipart without boundary": Case(400, content=b"abc", headers={"content-type": "multipart/form-data"}),
    "wrong method": Case(405, code="method_not_allowed", path=GENERATIONS, method="GET"),
    "unknown endpoint": Case(404, code="not_found", path="/v1/images/variations"),
}


def send(client: TestClient, case: Case) -> Any:
    return client.request(
        case.method,
        case.path,
        json=case.json,
        content=case.content,
        headers=case.headers,
        data=case.data,
        files=case.files,
    )


def assert_error_shape(response: Any, status: int, param: str | None = None, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert len(error["message"]) > 10
    assert error["type"] == "invalid_request_error"
    assert response.headers["x-request-id"]
    assert "x-should-retry" not in response.headers  # nothing started: a retry is harmless
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_clear_4xx_and_the_server_goes_on(client: TestClient, name: str) -> None:
    case = CASES[name]
    assert_error_shape(send(client, case), case.status, case.param, case.code)
    good = client.post(GENERATIONS, json=body())
    assert good.status_code == 200, good.text


def test_no_job_is_created_for_a_refused_request(client: TestClient) -> None:
    client.post(GENERATIONS, json=body(n=0))
    store = client.app.state.services.jobs.store  # type: ignore[attr-defined]
    assert store.recent() == []


@pytest.fixture
def strict_client(make_app: Any) -> Any:
    with TestClient(make_app(max_body_mb=0.25, max_upload_mb=0.05, max_output_megapixels=0.5)) as client:
        yield client


def test_a_body_over_the_limit_is_413_by_content_length(strict_client: TestClient) -> None:
    response = strict_client.post(GENERATIONS, json=body(prompt="x" * 300_000))
    assert_error_shape(response, 413, code="payload_too_large")


def test_a_streamed_body_over_the_limit_is_413(strict_client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 10_000

    response = strict_client.post(GENERATIONS, content=chunks(), headers={"content-type": "application/json"})
    assert_error_shape(response, 413, code="payload_too_large")
    assert strict_client.post(GENERATIONS, json=body()).status_code == 200


def test_an_upload_over_the_limit_is_413(strict_client: TestClient) -> None:
    big = png_bytes(photo(256, 256, 9))
    assert len(big) > 0.05 * 1024 * 1024
    multipart = strict_client.post(GENERATIONS, data={"prompt": "a"}, files=[file("input_image_0", big)])
    assert_error_shape(multipart, 413, "input_image_0", "payload_too_large")
    as_json = strict_client.post(GENERATIONS, json=body(input_image=b64(big)))
    assert_error_shape(as_json, 413, "input_image", "payload_too_large")


def test_output_megapixels_per_request_are_limited(strict_client: TestClient) -> None:
    response = strict_client.post(GENERATIONS, json=body(size="512x512", n=3))
    assert_error_shape(response, 400, "n")
    assert "0.5" in response.json()["error"]["message"]


def test_invalid_utf8_in_a_form_field_never_breaks_the_server(client: TestClient) -> None:
    # Starlette's form parser falls back to Latin-1 for a part that is not UTF-8, so the bytes
    # cannot be told apart afterwards; what matters here is no 5xx and service goes on.
    boundary = "b0undary"
    payload = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'.encode()
        + b"\xff\xfe\xfd"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        GENERATIONS, content=payload, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code < 500
    assert client.post(GENERATIONS, json=body()).status_code == 200


def test_safety_tolerance_on_a_local_model_says_to_omit_it(client: TestClient) -> None:
    response = client.post(GENERATIONS, json=body(safety_tolerance=2))
    assert_error_shape(response, 400, "safety_tolerance")
    assert "has no safety filter setting; omit safety_tolerance" in response.json()["error"]["message"]
