"""BFL's API served by fluxserve: fluxserve's own BFL engine as the client, then plain httpx for the
statuses, errors, cancel, webhooks and the content filter's moderation statuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from standardwebhooks.webhooks import Webhook

from fluxserve.api.app import create_app
from fluxserve.engines.base import GenerationRequest
from fluxserve.errors import ContentModerated, Moderated
from fluxserve.settings import Settings
from fluxserve.webhooks.secret import new_secret
from tests.helpers import TEST_TIMEOUT, photo, png_bytes, wait_for
from tests.jobs_support import JOBS, SLOW, LiveServer
from tests.postgres_support import BOTH_DATABASES
from tests.safety_support import BLOCK_ALL, filtering
from tests.test_bfl import engine_for
from tests.webhook_receiver import Answer, Receiver

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64, "seed": 11}
SECRET = new_secret()


@pytest.fixture
def upstream(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A fluxserve serving tiny-random, which the alias table answers for flux-2-pro."""
    return make_server(models=["tiny-random"], webhook_secret=SECRET)


def poll_until_done(http: httpx.Client, polling_url: str) -> dict[str, Any]:
    answers: list[dict[str, Any]] = []

    def done() -> bool:
        answers.append(http.get(polling_url).json())
        return bool(answers[-1]["status"] != "Pending")

    wait_for(done, "the task to end")
    return answers[-1]


def test_fluxserve_s_bfl_engine_gets_its_images_from_fluxserve(upstream: LiveServer) -> None:
    engine = engine_for(upstream.url, bfl_api_key="any-key-on-an-open-server")
    try:
        made = engine.generate(
            GenerationRequest("a lighthouse", width=64, height=64, seed=5, references=[photo(64, 64)])
        )
    finally:
        engine.close()
    assert made.images[0].image.size == (64, 64)
    [job] = upstream.http.get(JOBS).json()["data"]
    assert job["model"] == "tiny-random"
    assert job["status"] == "succeeded"
    assert job["request"]["seed"] == 5
    assert job["request"]["references"] == 1
    # The engine sent BFL's default safety_tolerance (2) to a model without one: accepted as "the default".
    served = upstream.http.get(job["images"][0]["url"].removeprefix(upstream.url))
    assert Image.open(io.BytesIO(served.content)).tobytes() == made.images[0].image.tobytes()


def test_a_second_fluxserve_serves_the_first_through_its_bfl_engine(
    upstream: LiveServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        models=["bfl:flux-2-pro"],
        bfl_api_key="key",
        bfl_base_url=upstream.url,
        data_dir=upstream.services.settings.data_dir.parent / "second",
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/images/generations", json={"prompt": "a lighthouse", "size": "64x64", "seed": 9})
    assert answer.status_code == 200, answer.text
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["data"][0]["b64_json"])))
    assert image.size == (64, 64)
    assert upstream.http.get(JOBS).json()["data"][0]["request"]["seed"] == 9


def test_submit_poll_and_download_as_a_bfl_client_does(upstream: LiveServer) -> None:
    http = upstream.http
    submitted = http.post("/v1/flux-2-pro", json={**SMALL, "output_format": "png"}, headers={"x-key": "k"})
    assert submitted.status_code == 200, submitted.text
    task = submitted.json()
    assert set(task) == {"id", "polling_url", "cost", "input_mp", "output_mp"}
    assert task["polling_url"] == f"{upstream.url}/v1/get_result?id={task['id']}"
    assert task["output_mp"] == round(64 * 64 / 1024**2, 4)
    assert task["input_mp"] == 0
    result = poll_until_done(http, task["polling_url"])
    assert result["status"] == "Ready"
    assert result["result"]["seed"] == 11
    assert result["result"]["prompt"] == "a lighthouse"
    sample = httpx.get(result["result"]["sample"], timeout=TEST_TIMEOUT)  # signed: no key needed
    assert sample.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(sample.content)).size == (64, 64)
    # The task is a job: the jobs API knows it.
    assert http.get(f"{JOBS}/{task['id']}").json()["status"] == "succeeded"


def test_jpeg_is_bfl_s_default_and_the_same_seed_makes_the_same_image(upstream: LiveServer) -> None:
    images = []
    for _ in range(2):
        task = upstream.http.post("/v1/flux-2-dev", json=SMALL).json()
        sample = poll_until_done(upstream.http, task["polling_url"])["result"]["sample"]
        images.append(httpx.get(sample, timeout=TEST_TIMEOUT))
    assert images[0].headers["content-type"] == "image/jpeg"
    assert images[0].content == images[1].content


def test_references_in_bfl_s_fields(upstream: LiveServer) -> None:
    reference = base64.b64encode(png_bytes(photo(80, 64))).decode()
    body = {**SMALL, "input_image": reference, "input_image_2": "data:image/png;base64," + reference}
    submitted = upstream.http.post("/v1/flux-2-pro", json=body)
    assert submitted.status_code == 200, submitted.text
    task = submitted.json()
    assert task["input_mp"] > 0
    assert poll_until_done(upstream.http, task["polling_url"])["status"] == "Ready"
    assert upstream.http.get(f"{JOBS}/{task['id']}").json()["request"]["references"] == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "aspect_ratio": "1:1"}, "aspect_ratio"),
        ({"prompt": "x", "width": 100, "height": 64}, "width"),
        ({"prompt": "x", "safety_tolerance": 5}, "safety_tolerance"),
        ({"prompt": "x", "prompt_upsampling": True}, "prompt_upsampling"),
        ({"prompt": "x", "webhook_secret": "s"}, "webhook_secret"),
        ({"prompt": 3}, "prompt"),
        ({"prompt": "x", "input_image": "https://example.com/a.png"}, "input_image"),
    ],
)
def test_bad_input_is_a_400_in_bfl_s_detail_shape(upstream: LiveServer, body: dict[str, Any], param: str) -> None:
    answer = upstream.http.post("/v1/flux-2-pro", json=body)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str)
    assert param in detail or param.replace("_", " ") in detail


def test_only_names_the_alias_table_knows_are_bfl_routes(upstream: LiveServer) -> None:
    assert upstream.http.post("/v1/flux-kontext-max", json={"prompt": "x"}).status_code == 404
    assert upstream.http.post("/v1/models", json={"prompt": "x"}).status_code == 405  # still the models route
    assert upstream.http.post("/v1/tiny-random", json={**SMALL}).status_code == 200  # a served name works too


def test_a_task_nobody_knows(upstream: LiveServer) -> None:
    for task_id in ("nope", "0" * 32):
        answer = upstream.http.get("/v1/get_result", params={"id": task_id})
        assert answer.status_code == 200
        assert answer.json()["status"] == "Task not found"


@pytest.fixture
def keyed(make_server: Callable[..., LiveServer]) -> tuple[LiveServer, str, str]:
    server = make_server(models=["tiny-random"])
    keys = server.services.keys
    return server, keys.create("first")[1], keys.create("second")[1]


def test_the_x_key_header_and_its_failures(keyed: tuple[LiveServer, str, str]) -> None:
    server, first, second = keyed
    missing = server.http.post("/v1/flux-2-pro", json=SMALL)
    assert missing.status_code == 401
    assert "API key" in missing.json()["detail"]
    wrong = server.http.post("/v1/flux-2-pro", json=SMALL, headers={"x-key": "fsk_" + "x" * 40})
    assert wrong.status_code == 401
    assert set(wrong.json()) == {"detail"}
    task = server.http.post("/v1/flux-2-pro", json=SMALL, headers={"x-key": first}).json()
    # Another key's task is not found; the owner's is.
    other = server.http.get("/v1/get_result", params={"id": task["id"]}, headers={"x-key": second})
    assert other.json()["status"] == "Task not found"
    with httpx.Client(headers={"x-key": first}, timeout=TEST_TIMEOUT) as owner:
        assert poll_until_done(owner, task["polling_url"])["status"] == "Ready"


def test_a_task_canceled_through_the_jobs_api_polls_as_error(make_server: Callable[..., LiveServer]) -> None:
    upstream = make_server(models=["tiny-random-base"])  # flux-2-pro: its alias, behind a slow job
    blocker = upstream.submit(SLOW)
    task = upstream.http.post("/v1/flux-2-pro", json=SMALL).json()
    assert upstream.http.get(task["polling_url"]).json()["status"] == "Pending"
    assert upstream.http.post(f"{JOBS}/{task['id']}/cancel").status_code == 200
    upstream.http.post(f"{JOBS}/{blocker['id']}/cancel")
    ended = upstream.http.get(task["polling_url"]).json()
    assert ended["status"] == "Error"
    assert ended["details"]["code"] == "cancelled"


@BOTH_DATABASES  # the sender reads the secret with the job's row: on both stores
def test_webhook_url_gets_bfl_s_body_signed_with_the_webhook_secret(upstream: LiveServer) -> None:
    receiver = Receiver([Answer(204)])
    body = {**SMALL, "webhook_url": receiver.url, "webhook_secret": "my-bfl-secret"}
    try:
        task = upstream.http.post("/v1/flux-2-pro", json=body).json()
        assert poll_until_done(upstream.http, task["polling_url"])["status"] == "Ready"
        wait_for(lambda: len(receiver.requests) == 1, "the webhook")
    finally:
        receiver.close()
    [posted] = receiver.requests  # BFL posts a task's end only: no started event
    expected = hmac.new(b"my-bfl-secret", posted.body, hashlib.sha256).hexdigest()
    assert posted.headers["x-bfl-signature"] == f"sha256={expected}"  # BFL's webhook guide
    Webhook(SECRET).verify(posted.body, posted.headers)  # and Standard Webhooks, the server's secret
    sent = json.loads(posted.body)
    assert (sent["id"], sent["status"], sent["result"]["seed"]) == (task["id"], "Ready", 11)
    assert httpx.get(sent["result"]["sample"], timeout=TEST_TIMEOUT).status_code == 200
    assert "timestamp" in sent
    # The secret is not shown back.
    assert "my-bfl-secret" not in upstream.http.get(f"{JOBS}/{task['id']}").text


def test_a_failed_task_s_webhook_says_error(make_server: Callable[..., LiveServer]) -> None:
    upstream = make_server(models=["tiny-random-base"])
    blocker = upstream.submit(SLOW)
    receiver = Receiver([Answer(204)])
    try:
        task = upstream.http.post("/v1/flux-2-pro", json={**SMALL, "webhook_url": receiver.url}).json()
        upstream.http.post(f"{JOBS}/{task['id']}/cancel")
        upstream.http.post(f"{JOBS}/{blocker['id']}/cancel")
        wait_for(lambda: len(receiver.requests) == 1, "the webhook")
    finally:
        receiver.close()
    [posted] = receiver.requests
    assert "x-bfl-signature" not in posted.headers  # no webhook_secret, no BFL signature
    sent = json.loads(posted.body)
    assert (sent["id"], sent["status"], sent["error"]) == (task["id"], "Error", "cancelled")


# -- the content filter: BFL's moderation statuses -----------------------------------------------
@pytest.fixture
def moderating(make_server: Callable[..., LiveServer], classifier_dir: Any) -> LiveServer:
    """A fluxserve whose content filter refuses every reference and withholds every output."""
    return make_server(models=["tiny-random"], webhook_secret=SECRET, **filtering(classifier_dir, "both", BLOCK_ALL))


def reference_field() -> dict[str, str]:
    return {"input_image": base64.b64encode(png_bytes(photo(64, 64, 3))).decode()}


@pytest.mark.parametrize(
    ("sent", "status", "moderated"),
    [(reference_field(), "Request Moderated", "input"), ({}, "Content Moderated", "output")],
    ids=["refused-reference", "withheld-output"],
)
def test_a_moderated_task_is_accepted_and_polls_and_posts_bfl_s_status(
    moderating: LiveServer, sent: dict[str, str], status: str, moderated: str
) -> None:
    receiver = Receiver([Answer(204)])
    try:
        body = {**SMALL, **sent, "webhook_url": receiver.url, "webhook_secret": "my-bfl-secret"}
        submitted = moderating.http.post("/v1/flux-2-pro", json=body)
        # Accepted as BFL accepts it: the refusal is the poll's to report, not the submit's.
        assert submitted.status_code == 200, submitted.text
        task = submitted.json()
        assert set(task) == {"id", "polling_url", "cost", "input_mp", "output_mp"}
        polled = poll_until_done(moderating.http, task["polling_url"])
        wait_for(lambda: len(receiver.requests) == 1, "the webhook")
    finally:
        receiver.close()
    assert (polled["id"], polled["status"], polled["result"]) == (task["id"], status, None)
    assert polled["details"]["code"] == "moderation_blocked"
    assert "content filter" in polled["details"]["message"]
    [posted] = receiver.requests
    sent_body = json.loads(posted.body)
    assert (sent_body["id"], sent_body["status"], sent_body["error"]) == (task["id"], status, "moderation_blocked")
    expected = hmac.new(b"my-bfl-secret", posted.body, hashlib.sha256).hexdigest()
    assert posted.headers["x-bfl-signature"] == f"sha256={expected}"
    # The jobs API shows the same job failed as on every surface; nothing of it was stored.
    job = moderating.http.get(f"{JOBS}/{task['id']}").json()
    assert (job["status"], job["error"]["type"]) == ("failed", "moderation_blocked")
    assert moderating.services.jobs.get(task["id"]).error_moderated == moderated
    data_dir = moderating.services.settings.data_dir
    assert [path for path in data_dir.rglob("*") if task["id"] in path.as_posix()] == []


def test_other_surfaces_still_refuse_a_blocked_reference_at_once(moderating: LiveServer) -> None:
    files = {"image": ("a.png", png_bytes(photo(64, 64, 3)), "image/png")}
    answer = moderating.http.post("/v1/images/edits", data={"prompt": "night", "size": "64x64"}, files=files)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "moderation_blocked"
    assert moderating.http.get(JOBS).json()["data"] == []  # no job: the OpenAI surface has no poll to tell


@pytest.mark.parametrize(("references", "moderated"), [(1, Moderated.INPUT), (0, Moderated.OUTPUT)])
def test_fluxserve_s_bfl_engine_reads_the_moderated_statuses_as_moderation(
    moderating: LiveServer, references: int, moderated: Moderated
) -> None:
    engine = engine_for(moderating.url, bfl_api_key="any-key-on-an-open-server")
    request = GenerationRequest("a lighthouse", width=64, height=64, seed=5, references=[photo(64, 64, 3)] * references)
    try:
        with pytest.raises(ContentModerated) as raised:
            engine.generate(request)
    finally:
        engine.close()
    assert (raised.value.code, raised.value.moderated) == ("moderation_blocked", moderated)
    assert (
        raised.value.provider_code
        == {Moderated.INPUT: "Request Moderated", Moderated.OUTPUT: "Content Moderated"}[moderated]
    )
