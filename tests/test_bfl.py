"""The BFL engine against the loopback fake of BFL's API: directly, and through the real server
with the official ``openai`` client and the jobs API."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from PIL import Image

from fluxserve.api.app import create_app
from fluxserve.engines.base import GenerationRequest, Progress
from fluxserve.engines.hosted.bfl import BflEngine, BflImage
from fluxserve.engines.hosted.catalog import HOSTED
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.engines.validation import validate
from fluxserve.errors import (
    ContentModerated,
    GenerationCancelled,
    InvalidRequest,
    ModelUnavailable,
    ProviderAuthFailed,
    ProviderBusy,
    ProviderError,
    ProviderOutOfCredit,
    ProviderRejectedRequest,
)
from fluxserve.jobs.models import JobSpec
from fluxserve.settings import Settings
from tests.fakes.bfl import FakeBfl
from tests.helpers import TEST_TIMEOUT, photo, png_bytes, wait_for
from tests.jobs_support import JOBS, LiveServer, sse_lines
from tests.servers import serve_in_thread

KEY = "bfl-test-key"
PRO, FLEX, KLEIN, MAX = "bfl:flux-2-pro", "bfl:flux-2-flex", "bfl:flux-2-klein-4b", "bfl:flux-2-max"
MODERATION = {"Request Moderated": "refused the request", "Content Moderated": "withheld the generated image"}

MakeEngine = Callable[..., BflEngine]


@pytest.fixture(scope="module")
def served_fake() -> Iterator[tuple[FakeBfl, str]]:
    fake = FakeBfl(KEY)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def fake(served_fake: tuple[FakeBfl, str]) -> FakeBfl:
    served_fake[0].reset()
    return served_fake[0]


def engine_for(url: str, model: str = PRO, **options: Any) -> BflEngine:
    values: dict[str, Any] = {
        "bfl_api_key": KEY,
        "bfl_base_url": url,
        "timeout_seconds": TEST_TIMEOUT / 6,  # the provider timeout; tests of it set their own
        "poll_min_seconds": 0.01,
        "poll_max_seconds": 0.05,
    }
    return BflEngine(HOSTED[model], ProviderOptions(**{**values, **options}))


@pytest.fixture
def make_engine(served_fake: tuple[FakeBfl, str]) -> Iterator[MakeEngine]:
    made: list[BflEngine] = []

    def build(model: str = PRO, **options: Any) -> BflEngine:
        made.append(engine_for(served_fake[1], model, **options))
        return made[-1]

    yield build
    for engine in made:
        engine.close()


def generate(engine: BflEngine, prompt: Any = "a lighthouse", **fields: Any) -> BflImage:
    """One image through the engine's own loop, keeping what BFL said it used."""
    request = validate(GenerationRequest(prompt, **fields), engine.capabilities)
    assert request.seed is not None
    made = engine.generate_one(request, request.seed, lambda _: None, None)
    assert isinstance(made, BflImage)
    return made


# -- the engine directly ---------------------------------------------------------------------


def test_text_to_image_sends_the_documented_body(fake: FakeBfl, make_engine: MakeEngine) -> None:
    reported: list[Progress] = []
    result = make_engine().generate(
        GenerationRequest("a lighthouse", width=256, height=192, seed=7), progress=reported.append
    )
    assert result.images[0].image.size == (256, 192)
    assert result.images[0].image.getpixel((0, 0)) == (7, 0, 0)  # the fake paints the seed
    credits = round(fake.credits_per_megapixel * 256 * 192 / 1024**2, 2)  # what the fake billed
    assert result.cost_usd == pytest.approx(credits * 0.01)  # 1 credit = $0.01
    [submit] = fake.submits
    assert submit.endpoint == "flux-2-pro"
    assert submit.key == KEY
    assert submit.body == {
        "prompt": "a lighthouse",
        "seed": 7,
        "width": 256,
        "height": 192,
        "safety_tolerance": 2,
        "output_format": "png",
    }
    assert [(p.step, p.total_steps, p.stage) for p in reported] == [
        (1, 3, "submitted"),
        (2, 3, "polling"),
        (3, 3, "downloading"),
    ]
    assert fake.download_keys == [None]  # the signed URL is its own credential


@pytest.mark.parametrize(("hint", "asked"), [("jpeg", "jpeg"), ("png", "png"), ("webp", "png"), (None, "png")])
def test_output_format_follows_the_hint(fake: FakeBfl, make_engine: MakeEngine, hint: str | None, asked: str) -> None:
    """JPEG from BFL only for a JPEG result: fluxserve re-encodes everything into the client's format."""
    made = generate(make_engine(), width=64, height=64, seed=3, output_format=hint)
    assert fake.submits[0].body["output_format"] == asked
    assert made.image.mode == "RGB"
    assert made.image.size == (64, 64)


@pytest.mark.parametrize("tolerance", [0, 5])
def test_the_clients_safety_tolerance_is_sent(fake: FakeBfl, make_engine: MakeEngine, tolerance: int) -> None:
    generate(make_engine(KLEIN), width=64, height=64, safety_tolerance=tolerance)
    assert fake.submits[0].body["safety_tolerance"] == tolerance


def test_credits_and_megapixels_are_kept(fake: FakeBfl, make_engine: MakeEngine) -> None:
    made = generate(make_engine(), width=1024, height=512, references=[photo(512, 512)])
    assert made.task is not None
    assert made.task.id in fake.tasks
    assert made.task.input_megapixels == 0.25
    assert made.task.output_megapixels == 0.5
    assert made.task.credits == 3.0 * 0.75
    assert made.cost_usd == pytest.approx(3.0 * 0.75 * 0.01)


def test_each_image_is_a_task_with_its_seed(fake: FakeBfl, make_engine: MakeEngine) -> None:
    result = make_engine().generate(GenerationRequest("two boats", width=64, height=64, seed=10, n=2))
    assert [s.body["seed"] for s in fake.submits] == [10, 11]
    assert result.seeds == [10, 11]


def test_a_resolved_request_is_accepted_again(fake: FakeBfl, make_engine: MakeEngine) -> None:
    """The jobs layer validates, stores the resolved request (steps 0 for pro) and hands it back."""
    engine = make_engine()
    resolved = validate(GenerationRequest("a boat", width=64, height=64), engine.capabilities)
    assert resolved.steps == 0
    engine.generate(resolved)
    assert "steps" not in fake.submits[0].body


def test_a_structured_prompt_is_sent_serialised(fake: FakeBfl, make_engine: MakeEngine) -> None:
    generate(make_engine(), {"scene": "a harbour", "subjects": [{"description": "a red boat"}]}, width=64, height=64)
    sent = json.loads(fake.submits[0].body["prompt"])
    assert sent["scene"] == "a harbour"


def test_flex_sends_steps_and_guidance(fake: FakeBfl, make_engine: MakeEngine) -> None:
    generate(make_engine(FLEX), width=64, height=64, steps=20, guidance=3.5)
    assert fake.submits[0].endpoint == "flux-2-flex"
    assert fake.submits[0].body["steps"] == 20
    assert fake.submits[0].body["guidance"] == 3.5


def test_flex_defaults_are_sent_too(fake: FakeBfl, make_engine: MakeEngine) -> None:
    generate(make_engine(FLEX), width=64, height=64)
    caps = HOSTED[FLEX].capabilities
    assert (fake.submits[0].body["steps"], fake.submits[0].body["guidance"]) == (caps.default_steps, 4.5)


@pytest.mark.parametrize("count", [1, 8])
def test_references_arrive_in_order(fake: FakeBfl, make_engine: MakeEngine, count: int) -> None:
    references = [photo(64 + 16 * i, 64, seed=i) for i in range(count)]
    generate(make_engine(), width=64, height=64, references=references)
    body = fake.submits[0].body
    expected = ["input_image", *(f"input_image_{i}" for i in range(2, count + 1))]
    assert [name for name in body if name.startswith("input_image")] == expected
    received = fake.submits[0].references
    assert [image.tobytes() for image in received] == [image.tobytes() for image in references]


def test_polls_back_off_up_to_the_cap(fake: FakeBfl, make_engine: MakeEngine) -> None:
    fake.reset(pending_polls=6)
    started = time.monotonic()
    generate(make_engine(poll_min_seconds=0.02, poll_max_seconds=0.08), width=64, height=64)
    elapsed = time.monotonic() - started
    waits = [0.02, 0.04, 0.08, 0.08, 0.08, 0.08, 0.08]  # doubling from the minimum, capped
    gaps = [b - a for a, b in zip(fake.poll_times, fake.poll_times[1:], strict=False)]
    assert fake.polls == 7
    assert all(gap >= wait * 0.9 for gap, wait in zip(gaps, waits[1:], strict=True))
    assert elapsed < 1.5  # uncapped doubling would wait 2.5 s


def test_a_failing_poll_is_retried(fake: FakeBfl, make_engine: MakeEngine) -> None:
    fake.fail_next_polls(2)
    generate(make_engine(), width=64, height=64)
    assert fake.submit_count == 1
    assert fake.downloads == 1


def test_a_poll_that_keeps_failing_is_an_error(fake: FakeBfl, make_engine: MakeEngine) -> None:
    fake.fail_next_polls(1000)
    with pytest.raises(ProviderError, match="kept failing") as raised:
        generate(make_engine(), width=64, height=64)
    assert raised.value.provider_code == "503"
    assert fake.submit_count == 1


@pytest.mark.parametrize("status", list(MODERATION))
def test_moderation_is_a_clear_error(fake: FakeBfl, make_engine: MakeEngine, status: str) -> None:
    fake.end_next_task(status)
    with pytest.raises(ContentModerated, match=MODERATION[status]) as raised:
        generate(make_engine(), width=64, height=64)
    assert raised.value.code == "moderation_blocked"
    assert raised.value.provider_code == status
    assert raised.value.moderated == {"Request Moderated": "input", "Content Moderated": "output"}[status]
    assert fake.downloads == 0


@pytest.mark.parametrize("status", ["Error", "Task not found"])
def test_a_task_that_fails_at_bfl(fake: FakeBfl, make_engine: MakeEngine, status: str) -> None:
    fake.end_next_task(status)
    with pytest.raises(ProviderError, match=f"status {status}") as raised:
        generate(make_engine(), width=64, height=64)
    assert type(raised.value) is ProviderError
    assert raised.value.provider_code == status


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (402, ProviderOutOfCredit, "provider_out_of_credit"),
        (422, ProviderRejectedRequest, "provider_rejected_request"),
        (400, ProviderRejectedRequest, "provider_rejected_request"),
        (500, ProviderError, "provider_error"),
        (503, ProviderError, "provider_error"),
        (429, ProviderBusy, "provider_busy"),
    ],
)
def test_a_refused_submit_is_mapped_and_never_retried(
    fake: FakeBfl, make_engine: MakeEngine, status: int, error: type[ProviderError], code: str
) -> None:
    fake.fail_next_submit(status)
    with pytest.raises(ProviderError) as raised:
        generate(make_engine(), width=64, height=64)
    assert type(raised.value) is error
    assert raised.value.code == code
    assert raised.value.provider_code == str(status)
    assert "RAW-PROVIDER-BODY" not in str(raised.value)
    assert KEY not in str(raised.value)
    assert fake.submit_count == 1
    assert fake.polls == 0


def test_a_wrong_key(fake: FakeBfl, make_engine: MakeEngine) -> None:
    with pytest.raises(ProviderAuthFailed, match="BFL_API_KEY") as raised:
        generate(make_engine(bfl_api_key="not-the-key"), width=64, height=64)
    assert "not-the-key" not in str(raised.value)


def test_a_429_with_retry_after_is_retried_once(fake: FakeBfl, make_engine: MakeEngine) -> None:
    fake.fail_next_submit(429, retry_after="1")
    started = time.monotonic()
    generate(make_engine(), width=64, height=64)
    assert time.monotonic() - started >= 1.0
    assert fake.submit_count == 2
    assert len(fake.tasks) == 1


def test_a_429_asking_too_long_a_wait_says_when_to_retry(fake: FakeBfl, make_engine: MakeEngine) -> None:
    fake.fail_next_submit(429, retry_after="120")
    with pytest.raises(ProviderBusy) as raised:
        generate(make_engine(), width=64, height=64)
    assert raised.value.retry_after == 120
    assert fake.submit_count == 1


def test_no_retry_after_a_read_timeout(fake: FakeBfl, make_engine: MakeEngine) -> None:
    fake.hang_next_submit()
    started = time.monotonic()
    with pytest.raises(ProviderError, match="not retried") as raised:
        generate(make_engine(timeout_seconds=0.5), width=64, height=64)
    assert raised.value.provider_code == "timeout"
    assert time.monotonic() - started < 5
    assert fake.submit_count == 1


def test_a_task_pending_too_long_is_given_up(fake: FakeBfl, make_engine: MakeEngine) -> None:
    fake.reset(pending_polls=10**6)
    engine = make_engine()
    engine.give_up_after_seconds = 0.1
    with pytest.raises(ProviderError, match="still pending"):
        generate(engine, width=64, height=64)
    assert fake.submit_count == 1


def test_an_expired_result_url(fake: FakeBfl, make_engine: MakeEngine) -> None:
    fake.reset(sample_ttl_seconds=0.0)
    with pytest.raises(ProviderError, match="expired") as raised:
        generate(make_engine(), width=64, height=64)
    assert raised.value.provider_code == "result_expired"
    assert fake.downloads == 1


def test_cancel_stops_polling(fake: FakeBfl, make_engine: MakeEngine) -> None:
    fake.reset(pending_polls=10**6)
    cancel = threading.Event()
    threading.Thread(target=lambda: (wait_for(lambda: fake.polls >= 3), cancel.set()), daemon=True).start()
    with pytest.raises(GenerationCancelled, match="may still finish and bill"):
        make_engine().generate(GenerationRequest("forever", width=64, height=64), cancel=cancel)
    polls = fake.polls
    time.sleep(0.2)
    assert fake.polls == polls


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (FLEX, {"steps": 60}),
        (FLEX, {"guidance": 12.0}),
        (PRO, {"steps": 20}),
        (PRO, {"references": [photo(64, 64)] * 9}),
        (KLEIN, {"references": [photo(64, 64)] * 5}),
        (PRO, {"width": 4096, "height": 4096}),
        (PRO, {"width": 100, "height": 64}),
        (PRO, {"safety_tolerance": 6}),
        (FLEX, {"safety_tolerance": -1}),
    ],
)
def test_what_bfl_would_refuse_is_refused_first(
    fake: FakeBfl, make_engine: MakeEngine, model: str, fields: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequest):
        make_engine(model).generate(GenerationRequest("x", **fields))
    assert fake.submit_count == 0


def test_without_a_key_the_model_is_unavailable(make_engine: MakeEngine) -> None:
    engine = make_engine(bfl_api_key=None)
    assert not engine.configured()
    with pytest.raises(ModelUnavailable, match="BFL_API_KEY"):
        engine.load()


def test_the_fake_rejects_what_bfl_documents_as_invalid(fake: FakeBfl, make_engine: MakeEngine) -> None:
    """The fake's own validation, so that the tests above would notice a body BFL refuses."""
    engine = make_engine()
    url = f"{engine.options.bfl_base_url}/v1/flux-2-pro"
    good = {"prompt": "x", "width": 64, "height": 64}
    for bad in (
        {**good, "webhook": "x"},
        {**good, "steps": 20},
        {**good, "width": 72},
        {**good, "width": 4096, "height": 4096},
        {**good, "safety_tolerance": 6},
        {**good, "output_format": "webp"},
        {**good, "input_image": "not base64!"},
        {"width": 64},
    ):
        assert engine.client.post(url, json=bad, headers={"x-key": KEY}).status_code == 422, bad
    assert engine.client.post(url, json=good, headers={"x-key": "wrong"}).status_code == 403
    assert engine.client.post(url, json=good, headers={"x-key": KEY}).status_code == 200


# -- through the real server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(served_fake: tuple[FakeBfl, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    engines = {name: engine_for(served_fake[1], name) for name in (PRO, FLEX, KLEIN)}
    engines[MAX] = engine_for(served_fake[1], MAX, bfl_api_key="not-the-key")
    data = tmp_path_factory.mktemp("bfl-server")
    settings = Settings(data_dir=data / "data", cache_dir=data / "cache", models=list(engines), warmup=False)
    app = create_app(settings, engines)
    with serve_in_thread(app) as url, LiveServer(app, url) as live:
        yield live
    for engine in engines.values():
        engine.close()


@pytest.fixture
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused-on-loopback", max_retries=0) as opened:
        yield opened


def decoded(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def finished_job(server: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    job = server.submit({"model": PRO, "prompt": "a harbour", "size": "64x64", **body})
    return server.wait_status(job["id"], "failed", "succeeded", "canceled")


def test_openai_text_to_image(fake: FakeBfl, client: openai.OpenAI) -> None:
    result = client.images.generate(model=PRO, prompt="a lighthouse", size="256x192", extra_body={"seed": 5})
    assert result.data is not None
    assert decoded(result.data[0].b64_json).size == (256, 192)
    assert fake.submits[0].body["prompt"] == "a lighthouse"
    assert fake.submits[0].body["seed"] == 5


def test_openai_flex_steps_and_guidance(fake: FakeBfl, client: openai.OpenAI) -> None:
    client.images.generate(model=FLEX, prompt="a kite", size="64x64", extra_body={"steps": 12, "guidance": 2.5})
    assert (fake.submits[0].body["steps"], fake.submits[0].body["guidance"]) == (12, 2.5)


@pytest.mark.parametrize("count", [1, 8])
def test_openai_edit_with_references(fake: FakeBfl, client: openai.OpenAI, count: int) -> None:
    references = [photo(64 + 16 * i, 64, seed=i) for i in range(count)]
    result = client.images.edit(
        model=PRO,
        image=[(f"{i}.png", png_bytes(image), "image/png") for i, image in enumerate(references)],
        prompt="all of them together",
        size="64x64",
    )
    assert result.data is not None
    body = fake.submits[0].body
    assert [name for name in body if name.startswith("input_image")] == [
        "input_image",
        *(f"input_image_{i}" for i in range(2, count + 1)),
    ]
    assert [image.size for image in fake.submits[0].references] == [image.size for image in references]


def test_openai_safety_tolerance_and_jpeg(fake: FakeBfl, client: openai.OpenAI) -> None:
    result = client.images.generate(
        model=PRO, prompt="a lighthouse", size="64x64", output_format="jpeg", extra_body={"safety_tolerance": 4}
    )
    assert result.data is not None
    assert decoded(result.data[0].b64_json).format == "JPEG"
    assert fake.submits[0].body["safety_tolerance"] == 4
    assert fake.submits[0].body["output_format"] == "jpeg"


def test_openai_edit_sends_safety_tolerance_as_a_form_field(fake: FakeBfl, client: openai.OpenAI) -> None:
    client.images.edit(
        model=KLEIN,
        image=("ref.png", png_bytes(photo(64, 64)), "image/png"),
        prompt="the same, at night",
        size="64x64",
        output_format="webp",
        extra_body={"safety_tolerance": 1},
    )
    assert fake.submits[0].body["safety_tolerance"] == 1
    assert fake.submits[0].body["output_format"] == "png"  # lossless from BFL for a webp result


def test_openai_safety_tolerance_outside_the_range_is_refused(fake: FakeBfl, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model=PRO, prompt="x", size="64x64", extra_body={"safety_tolerance": 6})
    assert raised.value.status_code == 400
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["param"] == "safety_tolerance"
    assert "safety_tolerance 6 is outside 0-5" in raised.value.message
    assert fake.submit_count == 0


def test_a_job_carries_safety_tolerance_and_asks_for_jpeg(fake: FakeBfl, server: LiveServer) -> None:
    job = finished_job(server, {"safety_tolerance": 0, "output_format": "jpg"})
    assert job["status"] == "succeeded", job
    assert job["request"]["safety_tolerance"] == 0
    assert job["request"]["output_format"] == "jpeg"
    assert fake.submits[0].body["safety_tolerance"] == 0
    assert fake.submits[0].body["output_format"] == "jpeg"
    image = server.http.get(job["images"][0]["url"])
    assert image.status_code == 200
    assert Image.open(io.BytesIO(image.content)).format == "JPEG"


def test_a_job_without_safety_tolerance_sends_bfls_default(fake: FakeBfl, server: LiveServer) -> None:
    job = finished_job(server, {})
    assert job["status"] == "succeeded", job
    assert "safety_tolerance" not in job["request"]  # shown only when the client set it
    assert fake.submits[0].body["safety_tolerance"] == 2
    assert fake.submits[0].body["output_format"] == "png"


def test_a_job_form_with_safety_tolerance(fake: FakeBfl, server: LiveServer) -> None:
    response = server.http.post(
        JOBS, data={"model": FLEX, "prompt": "a kite", "size": "64x64", "safety_tolerance": "3"}
    )
    assert response.status_code in (200, 202), response.text
    job = server.wait_status(response.json()["id"], "failed", "succeeded")
    assert job["status"] == "succeeded", job
    assert job["request"]["safety_tolerance"] == 3
    assert fake.submits[0].body["safety_tolerance"] == 3


def test_a_job_stored_before_safety_tolerance_existed_still_loads() -> None:
    stored = {
        "model": PRO,
        "operation": "generation",
        "prompt": "a boat",
        "width": 64,
        "height": 64,
        "steps": 0,
        "guidance": None,
        "seed": 1,
        "n": 1,
        "output_format": "png",
        "output_compression": None,
        "response_format": "b64_json",
    }
    assert JobSpec.from_json(stored).safety_tolerance is None


def test_a_job_polls_then_downloads(fake: FakeBfl, server: LiveServer) -> None:
    fake.reset(pending_polls=3)
    job = finished_job(server, {})
    assert job["status"] == "succeeded"
    [task] = fake.tasks.values()
    assert task.polls == 4
    assert fake.downloads == 1
    credits = round(fake.credits_per_megapixel * job["request"]["width"] * job["request"]["height"] / 1024**2, 2)
    assert job["usage"]["cost_usd"] == pytest.approx(credits * 0.01)  # 1 credit = $0.01


@pytest.mark.parametrize("status", list(MODERATION))
def test_moderation_fails_the_job(fake: FakeBfl, server: LiveServer, status: str) -> None:
    fake.end_next_task(status)
    job = finished_job(server, {})
    assert job["status"] == "failed"
    assert job["error"]["type"] == "moderation_blocked"
    assert MODERATION[status] in job["error"]["message"]
    # The job keeps which side BFL refused, so this server's own BFL surface reports it as BFL did.
    assert server.http.get("/v1/get_result", params={"id": job["id"]}).json()["status"] == status


def test_out_of_credit_fails_the_job(fake: FakeBfl, server: LiveServer) -> None:
    fake.fail_next_submit(402)
    job = finished_job(server, {})
    assert job["error"]["type"] == "provider_out_of_credit"
    assert "RAW-PROVIDER-BODY" not in job["error"]["message"]


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        ("Request Moderated", 400, "moderation_blocked"),
        ("Content Moderated", 400, "moderation_blocked"),
        ("Error", 502, "provider_error"),
        ("Task not found", 502, "provider_error"),
        (402, 503, "provider_out_of_credit"),
        (429, 503, "provider_busy"),
        (500, 502, "provider_error"),
        ("wrong key", 502, "provider_authentication_failed"),
        (422, 502, "provider_rejected_request"),
    ],
)
def test_each_failure_through_the_openai_client(
    fake: FakeBfl, client: openai.OpenAI, failure: str | int, status: int | None, code: str
) -> None:
    model = MAX if failure == "wrong key" else PRO
    if isinstance(failure, int):
        fake.fail_next_submit(failure)
    elif failure != "wrong key":
        fake.end_next_task(failure)
    with pytest.raises(openai.APIStatusError) as raised:
        client.images.generate(model=model, prompt="a boat", size="64x64")
    assert raised.value.code == code
    assert raised.value.status_code == status
    assert "RAW-PROVIDER-BODY" not in raised.value.message
    assert fake.submit_count == 1


@pytest.mark.parametrize(("failure", "status"), [("Request Moderated", 400), (429, 503), ("Error", 502)])
def test_a_streamed_failure_is_the_error_a_response_would_carry(
    fake: FakeBfl, server: LiveServer, failure: str | int, status: int
) -> None:
    """One mapping: a moderated prompt is an invalid_request_error, streamed or not (was server_error streamed)."""
    body = {"model": PRO, "prompt": "a boat", "size": "64x64"}
    answered, streamed = [], []
    for stream in (False, True):
        if isinstance(failure, int):
            fake.fail_next_submit(failure)
        else:
            fake.end_next_task(failure)
        response = server.http.post("/v1/images/generations", json={**body, "stream": stream})
        (streamed if stream else answered).append(response)
    assert answered[0].status_code == status
    assert streamed[0].status_code == 200
    kind, data = sse_lines(streamed[0])[-1]
    assert kind == "error"
    unlike = {"message"}  # it names the provider's task
    assert {k: v for k, v in data["error"].items() if k not in unlike} == {
        k: v for k, v in answered[0].json()["error"].items() if k not in unlike
    }


def test_no_second_submit_after_a_500(fake: FakeBfl, server: LiveServer) -> None:
    fake.fail_next_submit(500)
    job = finished_job(server, {})
    assert job["error"]["type"] == "provider_error"
    time.sleep(0.1)
    assert fake.submit_count == 1


def test_cancel_during_polling(fake: FakeBfl, server: LiveServer) -> None:
    fake.reset(pending_polls=10**6)
    job = server.submit({"model": PRO, "prompt": "forever", "size": "64x64"})
    wait_for(lambda: fake.polls >= 3, "three polls")
    assert server.job(job["id"])["progress"] == {"step": 2, "total": 3, "stage": "polling"}
    started = time.monotonic()
    response = server.http.post(f"{JOBS}/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    assert "may still finish and bill" in response.json()["error"]["message"]
    assert time.monotonic() - started < TEST_TIMEOUT / 6  # not after the polling ends (never)
    polls = fake.polls
    time.sleep(0.3)
    assert fake.polls == polls
    assert fake.submit_count == 1


@pytest.mark.parametrize(
    ("model", "count", "extra"),
    [
        (FLEX, 0, {"steps": 60}),
        (PRO, 9, {}),
        (KLEIN, 5, {}),
        (PRO, 0, {"size": "4096x4096"}),
    ],
)
def test_refused_with_400_before_any_call(
    fake: FakeBfl, client: openai.OpenAI, model: str, count: int, extra: dict[str, Any]
) -> None:
    images = [
        "data:image/png;base64," + base64.b64encode(png_bytes(photo(64, 64, seed=i))).decode() for i in range(count)
    ]
    size = extra.get("size", "64x64")
    extra_body = {name: value for name, value in extra.items() if name != "size"}
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model=model, prompt="x", size=size, extra_body={**extra_body, "images": images})
    assert raised.value.status_code == 400
    assert fake.submit_count == 0
