"""Workers AI's run endpoint served by fluxserve: fluxserve's own Workers AI engine as the client, the
reference gateway's multipart forms, FLUX.1 [schnell]'s JSON, and errors in the v4 envelope."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from fluxserve.api.protocol.workers_ai import cloudflare_code
from fluxserve.engines.base import GenerationRequest
from fluxserve.engines.hosted.catalog import HOSTED
from fluxserve.engines.hosted.cloudflare import CloudflareEngine
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.errors import ErrorCode
from tests.helpers import TEST_TIMEOUT, photo, png_bytes, wait_for
from tests.jobs_support import JOBS, SLOW, LiveServer

ACCOUNT = "0123456789abcdef"
RUN = f"/client/v4/accounts/{ACCOUNT}/ai/run/@cf/black-forest-labs"


@pytest.fixture
def upstream(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(
        models=["tiny-random", "tiny-random-dev", "tiny-random-schnell"],
        model_aliases={"flux-2-dev": "tiny-random-dev"},
    )


def engine_for(url: str, model: str, token: str = "any-token") -> CloudflareEngine:
    options = ProviderOptions(
        cloudflare_account_id=ACCOUNT,
        cloudflare_api_token=token,
        cloudflare_base_url=f"{url}/client/v4",
        timeout_seconds=TEST_TIMEOUT,
    )
    return CloudflareEngine(HOSTED[model], options)


def image_of(answer: Any) -> Image.Image:
    assert answer.status_code == 200, answer.text
    envelope = answer.json()
    assert envelope["success"] is True
    assert envelope["errors"] == []
    assert envelope["messages"] == []
    return Image.open(io.BytesIO(base64.b64decode(envelope["result"]["image"])))


@pytest.mark.parametrize(
    ("model", "served"), [("cf:flux-2-dev", "tiny-random-dev"), ("cf:flux-2-klein-4b", "tiny-random")]
)
def test_fluxserve_s_workers_ai_engine_gets_its_images_from_fluxserve(
    upstream: LiveServer, model: str, served: str
) -> None:
    engine = engine_for(upstream.url, model)
    try:
        request = GenerationRequest("a harbour", width=256, height=256, seed=3, steps=4, references=[photo(96, 64)])
        if engine.capabilities.fixed_steps:
            request = GenerationRequest("a harbour", width=256, height=256, seed=3, references=[photo(96, 64)])
        made = engine.generate(request)
    finally:
        engine.close()
    assert made.images[0].image.size == (256, 256)
    [job] = upstream.http.get(JOBS).json()["data"]
    assert (job["model"], job["status"], job["request"]["seed"], job["request"]["references"]) == (
        served,
        "succeeded",
        3,
        1,
    )


def test_the_gateway_s_multipart_form_with_four_references(upstream: LiveServer) -> None:
    files = {f"input_image_{i}": (f"ref{i}.png", png_bytes(photo(96, 64, seed=i)), "image/png") for i in range(4)}
    data = {"prompt": "four friends", "width": "256", "height": "256", "seed": "8"}
    answer = upstream.http.post(
        f"{RUN}/flux-2-klein-4b", data=data, files=files, headers={"authorization": "Bearer anything"}
    )
    image = image_of(answer)
    assert (image.format, image.size) == ("PNG", (256, 256))
    assert answer.headers["x-job-id"]
    job = upstream.http.get(f"{JOBS}/{answer.headers['x-job-id']}").json()
    assert job["request"]["references"] == 4


def test_a_structured_prompt_in_the_form(upstream: LiveServer) -> None:
    subject = '{"type": "boat", "description": "red", "pose": "moored", "position": "foreground"}'
    prompt = '{"scene": "a quiet harbour", "subjects": [' + subject + "]}"
    answer = upstream.http.post(
        f"{RUN}/flux-2-klein-4b", files={"prompt": (None, prompt), "width": (None, "256"), "height": (None, "256")}
    )
    assert image_of(answer).size == (256, 256)


def test_schnell_takes_json_and_answers_jpeg(upstream: LiveServer) -> None:
    answer = upstream.http.post(f"{RUN}/flux-1-schnell", json={"prompt": "a harbour", "steps": 2, "seed": 1})
    assert image_of(answer).format == "JPEG"


@pytest.mark.parametrize(
    ("body", "param"),
    [({"prompt": "x", "n": "2"}, "n"), ({"prompt": "x", "width": "100", "height": "256"}, "width")],
)
def test_bad_input_is_a_400_envelope(upstream: LiveServer, body: dict[str, str], param: str) -> None:
    answer = upstream.http.post(f"{RUN}/flux-2-klein-4b", files={k: (None, v) for k, v in body.items()})
    assert answer.status_code == 400
    envelope = answer.json()
    assert envelope["success"] is False
    assert envelope["result"] is None
    [error] = envelope["errors"]
    assert error["code"] == 5007
    assert param in error["message"]


def test_an_unknown_model_is_3042(upstream: LiveServer) -> None:
    answer = upstream.http.post(f"{RUN}/flux-9-ultra", files={"prompt": (None, "x")})
    assert answer.status_code == 404
    assert answer.json()["errors"][0]["code"] == 3042


def test_a_bad_bearer_key_is_10000(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(models=["tiny-random"])
    _, key = server.services.keys.create("worker")
    refused = server.http.post(
        f"{RUN}/flux-2-dev", files={"prompt": (None, "x")}, headers={"authorization": "Bearer fsk_" + "y" * 40}
    )
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == 10000
    accepted = server.http.post(
        f"{RUN}/flux-2-dev",
        files={"prompt": (None, "x"), "width": (None, "256"), "height": (None, "256")},
        headers={"authorization": f"Bearer {key}"},
    )
    assert image_of(accepted).size == (256, 256)


def test_the_same_seed_makes_the_same_image(upstream: LiveServer) -> None:
    fields = {"prompt": (None, "a harbour"), "width": (None, "256"), "height": (None, "256"), "seed": (None, "77")}
    first, second = (upstream.http.post(f"{RUN}/flux-2-klein-4b", files=fields) for _ in range(2))
    assert first.json()["result"]["image"] == second.json()["result"]["image"]


def test_a_run_canceled_through_the_jobs_api_answers_an_error_envelope(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(models=["tiny-random-base"])  # flux-2-dev: its alias, behind a slow job
    blocker = server.submit(SLOW)
    answers: list[Any] = []
    fields = {"prompt": (None, "x"), "width": (None, "256"), "height": (None, "256")}
    running = threading.Thread(target=lambda: answers.append(server.http.post(f"{RUN}/flux-2-dev", files=fields)))
    running.start()

    def queued() -> list[dict[str, Any]]:
        return [job for job in server.http.get(JOBS).json()["data"] if job["id"] != blocker["id"]]

    wait_for(queued, "the run's job")
    assert server.http.post(f"{JOBS}/{queued()[0]['id']}/cancel").status_code == 200
    server.http.post(f"{JOBS}/{blocker['id']}/cancel")
    running.join(TEST_TIMEOUT)
    [answer] = answers
    assert answer.status_code >= 400
    envelope = answer.json()
    assert envelope["success"] is False
    assert "canceled" in envelope["errors"][0]["message"]


def test_cloudflare_codes_for_fluxserve_errors() -> None:
    assert cloudflare_code(ErrorCode.INVALID_REQUEST, 400) == 5007
    assert cloudflare_code(ErrorCode.QUOTA_EXCEEDED, 429) == 3036
    assert cloudflare_code(ErrorCode.QUEUE_FULL, 429) == 3040
    assert cloudflare_code(ErrorCode.MODERATION_BLOCKED, 400) == 3030
    assert cloudflare_code(ErrorCode.PAYLOAD_TOO_LARGE, 413) == 3006
    assert cloudflare_code(ErrorCode.SERVER_ERROR, 500) == 3043
