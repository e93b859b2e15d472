"""Workers AI engines against a loopback fake of Workers AI: the engine directly, then through the
real fluxserve server and the official ``openai`` client."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from fluxserve.api.app import create_app
from fluxserve.engines.base import GenerationRequest, Progress
from fluxserve.engines.hosted.catalog import HOSTED
from fluxserve.engines.hosted.cloudflare import CloudflareEngine, below_reference_limit
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.errors import (
    ContentModerated,
    ErrorCode,
    GenerationCancelled,
    InvalidRequest,
    ModelUnavailable,
    ProviderAuthFailed,
    ProviderBusy,
    ProviderError,
    ProviderOutOfCredit,
    ProviderRejectedRequest,
)
from fluxserve.prompts.structured import prompt_text
from fluxserve.settings import Settings
from tests.fakes import cloudflare as fake_api
from tests.fakes.cloudflare import Failure, FakeWorkersAI
from tests.helpers import MAX_WAIT, PREFER_WAIT, TEST_TIMEOUT, photo, png_bytes, wait_for
from tests.servers import serve_in_thread

DEV, KLEIN_4B, KLEIN_9B, SCHNELL = "cf:flux-2-dev", "cf:flux-2-klein-4b", "cf:flux-2-klein-9b", "cf:flux-1-schnell"
TIMEOUT = TEST_TIMEOUT / 30
"""The provider timeout of the engines (2 s by default); one test makes the fake hang past it."""
STRUCTURED = {
    "scene": "a lighthouse on a cliff at dusk",
    "subjects": [{"type": "building", "description": "a white lighthouse", "position": "midground"}],
    "color_palette": ["#112233", "amber", "slate"],
    "text": "a sign reading 'Welcome'",
}


@pytest.fixture(scope="module")
def fake() -> FakeWorkersAI:
    return FakeWorkersAI()


@pytest.fixture(scope="module")
def fake_url(fake: FakeWorkersAI) -> Iterator[str]:
    with serve_in_thread(fake.app) as url:  # type: ignore[arg-type]  # a Starlette app serves as well
        yield url


@pytest.fixture(autouse=True)
def fresh(fake: FakeWorkersAI) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def options(fake: FakeWorkersAI, fake_url: str) -> ProviderOptions:
    return ProviderOptions(
        cloudflare_account_id=fake.account_id,
        cloudflare_api_token=fake.token,
        cloudflare_base_url=f"{fake_url}/client/v4",
        timeout_seconds=TIMEOUT,
    )


Build = Callable[[str, ProviderOptions], CloudflareEngine]


@pytest.fixture
def made() -> Iterator[list[CloudflareEngine]]:
    """The engines a test makes, closed after it (an engine holds an HTTP connection pool)."""
    engines: list[CloudflareEngine] = []
    yield engines
    for each in engines:
        each.client.close()


@pytest.fixture
def engine(made: list[CloudflareEngine]) -> Build:
    def build(name: str, options: ProviderOptions) -> CloudflareEngine:
        made.append(CloudflareEngine(HOSTED[name], options))
        return made[-1]

    return build


# -- the engine directly --------------------------------------------------------------------


def test_flux2_dev_sends_multipart_with_exactly_the_documented_fields(
    engine: Build, fake: FakeWorkersAI, options: ProviderOptions
) -> None:
    stages: list[str | None] = []
    result = engine(DEV, options).generate(
        GenerationRequest("a red fox", width=1024, height=768, seed=7), progress=lambda p: stages.append(p.stage)
    )
    assert fake.calls == 1
    assert fake.last.content_type.startswith("multipart/form-data")
    assert fake.last.fields == {
        "prompt": "a red fox",
        "steps": "25",
        "guidance": "4.0",
        "width": "1024",
        "height": "768",
        "seed": "7",
    }
    assert result.images[0].image.size == (1024, 768)
    assert result.seeds == [7]
    assert stages == ["submitted", "downloading"]
    assert result.cost_usd == pytest.approx(4 * 0.00041 * 25)  # 1024x768 is 2x2 tiles of 512


def test_a_prompt_alone_is_still_multipart(engine: Build, fake: FakeWorkersAI, options: ProviderOptions) -> None:
    engine(KLEIN_4B, options).generate(GenerationRequest("a bare prompt", seed=1))
    assert fake.last.content_type.startswith("multipart/form-data")


def test_klein_sends_no_steps_and_no_guidance(engine: Build, fake: FakeWorkersAI, options: ProviderOptions) -> None:
    result = engine(KLEIN_4B, options).generate(GenerationRequest("a fox", width=512, height=512, seed=3, n=2))
    assert fake.calls == 2
    assert [r.fields for r in fake.received] == [
        {"prompt": "a fox", "width": "512", "height": "512", "seed": str(seed)} for seed in (3, 4)
    ]
    assert result.steps == 4
    assert result.cost_usd == pytest.approx(2 * 0.000287)  # one output tile each, not per step


def test_klein_9b_and_schnell_have_no_documented_price(
    engine: Build, fake: FakeWorkersAI, options: ProviderOptions
) -> None:
    assert engine(KLEIN_9B, options).generate(GenerationRequest("x", width=512, height=512)).cost_usd is None
    assert engine(SCHNELL, options).generate(GenerationRequest("x")).cost_usd is None


def test_schnell_sends_json_prompt_steps_and_seed_only(
    engine: Build, fake: FakeWorkersAI, options: ProviderOptions
) -> None:
    result = engine(SCHNELL, options).generate(GenerationRequest("a quick sketch", steps=6, seed=11))
    assert fake.last.content_type == "application/json"
    assert fake.last.fields == {"prompt": "a quick sketch", "steps": "6", "seed": "11"}
    assert result.images[0].image.size == (1024, 1024)  # the fake's JPEG, decoded


def test_references_are_png_parts_below_512_on_each_side(
    engine: Build, fake: FakeWorkersAI, options: ProviderOptions
) -> None:
    sizes = [(1000, 500), (300, 900), (511, 511), (2000, 2000)]
    references = [photo(w, h, i) for i, (w, h) in enumerate(sizes)]
    result = engine(DEV, options).generate(
        GenerationRequest("all four", references=references, width=512, height=512, steps=10, seed=1)
    )
    received = fake.last
    assert list(received.images) == ["input_image_0", "input_image_1", "input_image_2", "input_image_3"]
    assert set(received.image_types.values()) == {"image/png"}
    for (width, height), got in zip(sizes, received.images.values(), strict=True):
        assert max(got) < 512
        assert got[0] / got[1] == pytest.approx(width / height, rel=0.01)
    assert received.images["input_image_2"] == (511, 511)  # already below: sent as it is
    assert result.cost_usd == pytest.approx((4 * 0.00021 + 0.00041) * 10)


def test_below_reference_limit_keeps_the_aspect_ratio() -> None:
    assert below_reference_limit(Image.new("RGB", (1024, 512))).size == (511, 256)
    assert below_reference_limit(Image.new("RGB", (512, 64))).size == (511, 64)
    small = Image.new("RGB", (200, 100))
    assert below_reference_limit(small) is small


@pytest.mark.parametrize(
    ("name", "request_"),
    [
        (DEV, GenerationRequest("too big", width=2048, height=2048)),
        (DEV, GenerationRequest("five", references=[photo(64, 64, i) for i in range(5)])),
        (KLEIN_4B, GenerationRequest("steps", steps=8)),
        (KLEIN_4B, GenerationRequest("guidance", guidance=3.0)),
        (SCHNELL, GenerationRequest("x" * 3000)),
        (SCHNELL, GenerationRequest("steps", steps=9)),
        (SCHNELL, GenerationRequest("a reference", references=[photo(64, 64)])),
    ],
)
def test_what_workers_ai_would_reject_is_refused_before_any_call(
    engine: Build, fake: FakeWorkersAI, options: ProviderOptions, name: str, request_: GenerationRequest
) -> None:
    with pytest.raises(InvalidRequest):
        engine(name, options).generate(request_)
    assert fake.calls == 0


ERRORS = [
    (fake_api.DAILY_ALLOCATION, ProviderOutOfCredit, "3036"),
    (fake_api.OUT_OF_CAPACITY, ProviderBusy, "3040"),
    (fake_api.RATE_LIMITED_NO_RETRY_AFTER, ProviderBusy, "http_429"),
    (fake_api.TOO_LARGE, ProviderRejectedRequest, "3006"),
    (fake_api.TIMED_OUT, ProviderError, "3007"),
    (Failure(408, 3008), ProviderError, "3008"),
    (fake_api.INVALID, ProviderRejectedRequest, "3003"),
    (Failure(400, 5004), ProviderRejectedRequest, "5004"),
    (Failure(400, 5007), ProviderRejectedRequest, "5007"),
    (fake_api.NO_SUCH_MODEL, ProviderError, "3042"),
    (fake_api.PAID_ONLY, ProviderAuthFailed, "5035"),
    (fake_api.UNAUTHORIZED, ProviderAuthFailed, "10000"),
    (fake_api.SERVER_ERROR, ProviderError, "http_500"),
    (Failure(503, None), ProviderError, "http_503"),
    (fake_api.INPUT_NSFW, ContentModerated, "3030"),
    (fake_api.OUTPUT_NSFW, ContentModerated, "3030"),
]


@pytest.mark.parametrize(("failure", "kind", "provider_code"), ERRORS)
def test_each_error_maps_to_a_fluxserve_error_once_without_the_raw_body(
    engine: Build,
    fake: FakeWorkersAI,
    options: ProviderOptions,
    failure: Failure,
    kind: type[ProviderError],
    provider_code: str,
) -> None:
    fake.fail_next(failure)
    with pytest.raises(ProviderError) as raised:
        engine(DEV, options).generate(GenerationRequest("x", width=512, height=512))
    error = raised.value
    assert type(error) is kind
    assert error.provider == "cloudflare"
    assert error.provider_code == provider_code
    assert "injected" not in str(error)  # the provider's own message is not echoed
    assert fake.token not in str(error)
    assert fake.calls == 1  # a 5xx or a 4xx is never sent again


@pytest.mark.parametrize(
    ("failure", "said", "side"),
    [(fake_api.INPUT_NSFW, "refused the request", "input"), (fake_api.OUTPUT_NSFW, "withheld the image", "output")],
)
def test_moderation_says_which_side_was_refused_as_moderation_blocked(
    engine: Build, fake: FakeWorkersAI, options: ProviderOptions, failure: Failure, said: str, side: str
) -> None:
    fake.fail_next(failure)
    with pytest.raises(ContentModerated) as raised:
        engine(DEV, options).generate(GenerationRequest("x", width=512, height=512))
    assert raised.value.code is ErrorCode.MODERATION_BLOCKED
    assert raised.value.moderated == side
    assert said in str(raised.value)
    assert "NSFW content" not in str(raised.value)  # in our words


def test_busy_says_when_to_retry(engine: Build, fake: FakeWorkersAI, options: ProviderOptions) -> None:
    fake.fail_next(Failure(429, 3040, retry_after="120"))  # longer than calls.create waits
    with pytest.raises(ProviderBusy) as raised:
        engine(DEV, options).generate(GenerationRequest("x", width=512, height=512))
    assert raised.value.retry_after == 120
    assert fake.calls == 1


def test_a_wrong_token_is_an_authentication_failure(
    engine: Build, fake: FakeWorkersAI, options: ProviderOptions
) -> None:
    wrong = replace(options, cloudflare_api_token="not-the-token")
    with pytest.raises(ProviderAuthFailed) as raised:
        engine(DEV, wrong).generate(GenerationRequest("x", width=512, height=512))
    assert "not-the-token" not in str(raised.value)
    assert "cloudflare_api_token" in str(raised.value)


def test_a_429_with_retry_after_is_retried_once(engine: Build, fake: FakeWorkersAI, options: ProviderOptions) -> None:
    fake.fail_next(fake_api.RATE_LIMITED)
    result = engine(DEV, options).generate(GenerationRequest("x", width=512, height=512))
    assert fake.calls == 2
    assert result.images[0].image.size == (512, 512)


def test_a_read_timeout_is_not_retried(engine: Build, fake: FakeWorkersAI, options: ProviderOptions) -> None:
    fake.fail_next(Failure(500, None, hang_seconds=TIMEOUT * 2))
    with pytest.raises(ProviderError) as raised:
        engine(DEV, options).generate(GenerationRequest("x", width=512, height=512))
    assert raised.value.provider_code == "timeout"
    assert fake.calls == 1


def test_cancel_while_waiting_out_a_429_says_workers_ai_may_bill(
    engine: Build, fake: FakeWorkersAI, options: ProviderOptions
) -> None:
    fake.fail_next(Failure(429, None, retry_after="30"))
    cancel = threading.Event()

    def cancel_once_sent() -> None:  # not on a timer: a busy machine may not have sent it yet
        wait_for(lambda: fake.calls == 1, "the request sent to Workers AI")
        cancel.set()

    threading.Thread(target=cancel_once_sent, daemon=True).start()
    with pytest.raises(GenerationCancelled, match="may still"):
        engine(DEV, options).generate(GenerationRequest("x", width=512, height=512), cancel=cancel)
    assert fake.calls == 1


def test_an_unconfigured_engine_names_its_settings(engine: Build, options: ProviderOptions) -> None:
    bare = engine(DEV, replace(options, cloudflare_api_token=None))
    assert not bare.configured()
    with pytest.raises(ModelUnavailable, match="CLOUDFLARE_API_TOKEN"):
        bare.load()
    assert engine(DEV, replace(options, cloudflare_concurrency=7)).concurrency == 7


def test_progress_counts_stages_over_the_images(engine: Build, fake: FakeWorkersAI, options: ProviderOptions) -> None:
    seen: list[Progress] = []
    engine(KLEIN_4B, options).generate(GenerationRequest("x", width=256, height=256, n=2), progress=seen.append)
    assert [(p.step, p.total_steps, p.stage) for p in seen] == [
        (1, 4, "submitted"),
        (2, 4, "downloading"),
        (3, 4, "submitted"),
        (4, 4, "downloading"),
    ]


# -- through the real server and the official openai client ---------------------------------


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory, options: ProviderOptions) -> Iterator[str]:
    models = [DEV, KLEIN_4B, SCHNELL]
    data = tmp_path_factory.mktemp("cloudflare-server")
    settings = Settings(
        data_dir=data / "data", cache_dir=data / "cache", models=models, warmup=False, max_wait_seconds=MAX_WAIT
    )
    engines = {m: CloudflareEngine(HOSTED[m], options) for m in models}
    with serve_in_thread(create_app(settings, engines)) as url:
        yield url
    for each in engines.values():
        each.client.close()


@pytest.fixture
def client(server_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused-on-loopback", max_retries=0) as opened:
        yield opened


def job(server_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/jobs and wait for the finished job."""
    response = httpx.post(f"{server_url}/v1/jobs", json=body, headers=PREFER_WAIT, timeout=TEST_TIMEOUT)
    assert response.status_code in (200, 201, 202), response.text
    finished: dict[str, Any] = response.json()
    assert finished["status"] in ("succeeded", "failed", "canceled"), finished
    return finished


def decoded(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_text_to_image_through_openai(client: openai.OpenAI, fake: FakeWorkersAI) -> None:
    result = client.images.generate(model=DEV, prompt="a harbour at dawn", size="768x512", extra_body={"seed": 5})
    assert result.data is not None
    assert decoded(result.data[0].b64_json).size == (768, 512)
    assert fake.last.fields["prompt"] == "a harbour at dawn"
    assert fake.last.fields["seed"] == "5"
    assert result.usage is not None
    assert result.usage.model_extra is not None
    assert result.usage.model_extra["output_megapixels"] == round(768 * 512 / 1024**2, 4)
    assert result.usage.model_extra["cost_usd"] == pytest.approx(2 * 0.00041 * 25)  # 768x512: 2x1 tiles


def test_schnell_through_openai(client: openai.OpenAI, fake: FakeWorkersAI) -> None:
    result = client.images.generate(model=SCHNELL, prompt="a quick sketch", extra_body={"steps": 8})
    assert result.data is not None
    assert decoded(result.data[0].b64_json).size == (1024, 1024)
    assert fake.last.content_type == "application/json"
    assert fake.last.fields["steps"] == "8"


def test_a_json_prompt_arrives_serialised_in_prompt(client: openai.OpenAI, fake: FakeWorkersAI) -> None:
    client.images.generate(model=DEV, prompt="(replaced)", size="512x512", extra_body={"prompt": STRUCTURED})
    sent = fake.last.fields["prompt"]
    assert sent == prompt_text(STRUCTURED)
    assert json.loads(sent)["text"] == STRUCTURED["text"]


@pytest.mark.parametrize("count", [1, 4])
def test_references_through_openai_edit_are_resized_below_512(
    client: openai.OpenAI, fake: FakeWorkersAI, count: int
) -> None:
    sizes = [(1200, 800), (640, 640), (300, 700), (900, 400)][:count]
    images = [(f"{i}.png", png_bytes(photo(w, h, i)), "image/png") for i, (w, h) in enumerate(sizes)]
    result = client.images.edit(model=DEV, image=images, prompt="these together", size="512x512")
    assert result.data is not None
    received = fake.last.images
    assert list(received) == [f"input_image_{i}" for i in range(count)]
    for (width, height), got in zip(sizes, received.values(), strict=True):
        assert max(got) < 512
        assert got[0] / got[1] == pytest.approx(width / height, rel=0.02)


def test_usage_and_cost_of_a_job(server_url: str, fake: FakeWorkersAI) -> None:
    done = job(server_url, {"model": DEV, "prompt": "a kite", "size": "1024x1024", "steps": 20, "n": 2})
    assert done["status"] == "succeeded"
    usage = done["usage"]
    assert usage["output_megapixels"] == 2.0
    assert usage["images"] == 2
    assert fake.calls == 2
    assert usage["cost_usd"] == pytest.approx(2 * 4 * 0.00041 * 20)


SERVER_ERRORS = [
    (fake_api.DAILY_ALLOCATION, "provider_out_of_credit"),
    (fake_api.OUT_OF_CAPACITY, "provider_busy"),
    (fake_api.RATE_LIMITED_NO_RETRY_AFTER, "provider_busy"),
    (fake_api.UNAUTHORIZED, "provider_authentication_failed"),
    (fake_api.PAID_ONLY, "provider_authentication_failed"),
    (fake_api.INVALID, "provider_rejected_request"),
    (fake_api.TOO_LARGE, "provider_rejected_request"),
    (fake_api.TIMED_OUT, "provider_error"),
    (fake_api.NO_SUCH_MODEL, "provider_error"),
    (fake_api.SERVER_ERROR, "provider_error"),
]


@pytest.mark.parametrize(("failure", "code"), SERVER_ERRORS)
def test_each_error_fails_the_job_with_its_code(
    server_url: str, fake: FakeWorkersAI, failure: Failure, code: str
) -> None:
    fake.fail_next(failure)
    done = job(server_url, {"model": DEV, "prompt": "x", "size": "512x512"})
    assert done["status"] == "failed"
    assert done["error"]["type"] == code
    assert fake.token not in done["error"]["message"]
    assert fake.calls == 1
    # A busy provider says when to come back (30 s when Workers AI gave no Retry-After).
    assert done["error"].get("retry_after") == (30 if code == "provider_busy" else None)


@pytest.mark.parametrize(("failure", "code"), SERVER_ERRORS)
def test_each_error_is_a_clear_error_on_the_sync_endpoint(
    client: openai.OpenAI, fake: FakeWorkersAI, failure: Failure, code: str
) -> None:
    fake.fail_next(failure)
    with pytest.raises(openai.APIStatusError) as raised:
        client.images.generate(model=DEV, prompt="x", size="512x512")
    error = raised.value
    assert error.code == code
    assert error.status_code >= 400
    assert "Workers AI" in error.message
    assert error.response.headers.get("retry-after") == ("30" if code == "provider_busy" else None)
    assert error.response.headers["x-should-retry"] == "false"
    assert fake.calls == 1


def test_no_retry_after_a_5xx_through_the_server(client: openai.OpenAI, fake: FakeWorkersAI) -> None:
    fake.fail_next(fake_api.SERVER_ERROR)
    with pytest.raises(openai.APIStatusError):
        client.images.generate(model=DEV, prompt="x", size="512x512")
    assert fake.calls == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": DEV, "prompt": "x", "size": "2048x2048"}, "width"),
        ({"model": KLEIN_4B, "prompt": "x", "steps": 8}, "steps"),
        ({"model": SCHNELL, "prompt": "x", "steps": 9}, "steps"),
    ],
)
def test_requests_workers_ai_would_reject_are_400_before_any_call(
    server_url: str, fake: FakeWorkersAI, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(f"{server_url}/v1/images/generations", json=body, timeout=TEST_TIMEOUT)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert fake.calls == 0


def test_five_references_are_400_before_any_call(client: openai.OpenAI, fake: FakeWorkersAI) -> None:
    images = [(f"{i}.png", png_bytes(photo(64, 64, i)), "image/png") for i in range(5)]
    with pytest.raises(openai.BadRequestError):
        client.images.edit(model=DEV, image=images, prompt="five")
    assert fake.calls == 0


def test_a_schnell_prompt_over_2048_characters_never_reaches_workers_ai(
    server_url: str, client: openai.OpenAI, fake: FakeWorkersAI
) -> None:
    # The model's prompt limit is one of its capabilities: refused at request time, no job made.
    refused = httpx.post(f"{server_url}/v1/jobs", json={"model": SCHNELL, "prompt": "x" * 3000}, timeout=TEST_TIMEOUT)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "prompt"
    assert "2048" in refused.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="2048"):
        client.images.generate(model=SCHNELL, prompt="x" * 3000)
    assert fake.calls == 0


def test_models_are_listed(server_url: str) -> None:
    listed = httpx.get(f"{server_url}/v1/models", timeout=TEST_TIMEOUT).json()
    ids = {model["id"] for model in listed["data"]}
    assert {DEV, KLEIN_4B, SCHNELL} <= ids


# -- the fake refuses what Workers AI refuses ------------------------------------------------


def _multipart(**fields: str) -> dict[str, Any]:
    return {"files": {name: (None, value) for name, value in fields.items()}}


@pytest.mark.parametrize(
    ("model", "body"),
    [
        ("flux-2-dev", {"json": {"prompt": "json is not accepted"}}),
        ("flux-2-dev", _multipart(prompt="x", negative_prompt="unknown field")),
        ("flux-2-dev", _multipart(prompt="x", width="2048")),
        ("flux-2-dev", _multipart(prompt="x", height="128")),
        ("flux-2-dev", _multipart(steps="4")),
        ("flux-2-dev", {"files": {"prompt": (None, "x"), "input_image_0": ("a.png", png_bytes(photo(512, 64)))}}),
        ("flux-2-dev", {"files": {"prompt": (None, "x"), "input_image_4": ("a.png", png_bytes(photo(64, 64)))}}),
        ("flux-2-klein-4b", _multipart(prompt="x", steps="8")),
        ("flux-1-schnell", _multipart(prompt="multipart is not accepted")),
        ("flux-1-schnell", {"json": {"prompt": "x" * 2049}}),
        ("flux-1-schnell", {"json": {"prompt": "x", "steps": 9}}),
        ("flux-1-schnell", {"json": {"prompt": "x", "width": 512}}),
    ],
)
def test_the_fake_rejects_what_workers_ai_rejects(
    fake: FakeWorkersAI, fake_url: str, model: str, body: dict[str, Any]
) -> None:
    url = f"{fake_url}/client/v4/accounts/{fake.account_id}/ai/run/@cf/black-forest-labs/{model}"
    response = httpx.post(url, headers={"authorization": f"Bearer {fake.token}"}, timeout=TEST_TIMEOUT, **body)
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert response.json()["errors"][0]["code"] == fake_api.INVALID_INPUT


def test_the_fake_checks_the_token_and_the_account(fake: FakeWorkersAI, fake_url: str) -> None:
    run = "ai/run/@cf/black-forest-labs/flux-2-dev"
    for account, token in ((fake.account_id, "wrong"), ("another-account", fake.token)):
        response = httpx.post(
            f"{fake_url}/client/v4/accounts/{account}/{run}",
            headers={"authorization": f"Bearer {token}"},
            timeout=TEST_TIMEOUT,
            **_multipart(prompt="x"),
        )
        assert response.status_code == 401
    assert fake.received == []
