"""The content filter through its real decision path: a tiny random-weight ViT classifier with the
config shape of the default one (labels ``normal`` and ``nsfw``), saved offline, loaded by the server
(tests/safety_support.py; the threshold decides the outcome)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from fluxserve.engines.safety import ContentFilter, ImageClassifier
from fluxserve.errors import ContentBlocked, InvalidRequest, ModelUnavailable, Moderated
from fluxserve.webhooks.secret import new_secret
from tests.helpers import PREFER_WAIT, photo, png_bytes, wait_for
from tests.jobs_support import JOBS, QUICK, LiveServer, sse_lines
from tests.safety_support import BLOCK_ALL, PASS_ALL, filtering
from tests.webhook_receiver import Answer, Receiver

SECRET = new_secret()


def edit_files() -> dict[str, tuple[str, bytes, str]]:
    return {"image": ("a.png", png_bytes(photo(64, 64, 1)), "image/png")}


def stored_outputs(app: FastAPI) -> list[Path]:
    return sorted((app.state.services.settings.data_dir / "outputs").rglob("*.*"))


# -- the check itself ----------------------------------------------------------------------------
def test_the_classifier_scores_each_image_and_the_threshold_decides(classifier_dir: Path) -> None:
    images = [photo(40, 30, 1), photo(64, 64, 2).convert("L")]
    blocking = ImageClassifier(str(classifier_dir), threshold=BLOCK_ALL, labels=["nsfw"], allow_download=False)
    verdicts = blocking.load().judge(images)
    assert [verdict.flagged for verdict in verdicts] == [True, True]
    assert all(0.0 <= verdict.score <= 1.0 and verdict.label == "nsfw" for verdict in verdicts)
    passing = ImageClassifier(str(classifier_dir), threshold=PASS_ALL, labels=["nsfw"], allow_download=False)
    again = passing.load().judge(images)
    assert [verdict.flagged for verdict in again] == [False, False]
    assert [v.score for v in again] == pytest.approx([v.score for v in verdicts])  # same weights, same scores
    both = ImageClassifier(str(classifier_dir), threshold=PASS_ALL, labels=["nsfw", "normal"], allow_download=False)
    assert both.load().judge(images[:1])[0].score == pytest.approx(1.0)  # all the probability there is


def test_the_filter_names_the_refused_reference_and_keeps_to_its_scope(classifier_dir: Path) -> None:
    check = ImageClassifier(str(classifier_dir), threshold=BLOCK_ALL, labels=["nsfw"], allow_download=False).load()
    refs = ContentFilter(check, "refs")
    with pytest.raises(ContentBlocked) as refused:
        refs.check_references([photo(32, 32)])
    assert (refused.value.param, refused.value.moderated) == ("image", Moderated.INPUT)
    assert str(refused.value).startswith("image[0] was refused by this server's content filter (nsfw score")
    refs.check_outputs([photo(32, 32)])  # outputs are not its business
    assert refs.passes(photo(32, 32))
    outputs = ContentFilter(check, "outputs")
    outputs.check_references([photo(32, 32)])
    with pytest.raises(ContentBlocked, match="withheld the generated image 1 of 1") as withheld:
        outputs.check_outputs([photo(32, 32)])
    assert withheld.value.moderated is Moderated.OUTPUT
    assert not outputs.passes(photo(32, 32))


def test_an_unknown_label_or_a_missing_model_says_what_to_do(classifier_dir: Path) -> None:
    wrong = ImageClassifier(str(classifier_dir), threshold=0.5, labels=["porn"], allow_download=False)
    with pytest.raises(InvalidRequest, match=r"does not have \(its labels: normal, nsfw\)") as raised:
        wrong.load()
    assert raised.value.param == "content_filter_labels"
    missing = ImageClassifier(
        "fluxserve-tests/no-such-classifier", threshold=0.5, labels=["nsfw"], allow_download=False
    )
    with pytest.raises(ModelUnavailable, match=r"downloads are off.*hf download fluxserve-tests/no-such-classifier"):
        missing.load()


# -- the OpenAI endpoints (sync) -----------------------------------------------------------------
def test_a_blocked_reference_is_a_400_and_no_job(make_app: Callable[..., FastAPI], classifier_dir: Path) -> None:
    app = make_app(models=["tiny-random"], **filtering(classifier_dir, "refs", BLOCK_ALL))
    with TestClient(app) as client:
        response = client.post("/v1/images/edits", data={"prompt": "night", "size": "64x64"}, files=edit_files())
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["type"], error["param"]) == (
            "moderation_blocked",
            "invalid_request_error",
            "image",
        )
        assert "content filter" in error["message"]
        assert client.get(JOBS).json()["data"] == []
        generated = client.post("/v1/images/generations", json={"prompt": "a lake", "size": "64x64"})
        assert generated.status_code == 200, generated.text  # outputs are not judged


def test_a_passed_reference_is_edited(make_app: Callable[..., FastAPI], classifier_dir: Path) -> None:
    app = make_app(models=["tiny-random"], **filtering(classifier_dir, "both", PASS_ALL))
    with TestClient(app) as client:
        response = client.post("/v1/images/edits", data={"prompt": "night", "size": "64x64"}, files=edit_files())
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 1
        assert len(stored_outputs(app)) == 1


def test_a_blocked_output_is_a_400_and_never_stored(make_app: Callable[..., FastAPI], classifier_dir: Path) -> None:
    app = make_app(models=["tiny-random"], **filtering(classifier_dir, "outputs", BLOCK_ALL))
    with TestClient(app) as client:
        response = client.post("/v1/images/generations", json={"prompt": "a lake", "size": "64x64", "n": 2})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "moderation_blocked"
        assert "withheld the generated image 1 of 2" in error["message"]
        job = client.get(f"{JOBS}/{response.headers['x-job-id']}").json()
        assert job["status"] == "failed"
        assert job["error"]["type"] == "moderation_blocked"
        assert "images" not in job or not job["images"]
        assert stored_outputs(app) == []
        edited = client.post("/v1/images/edits", data={"prompt": "night", "size": "64x64"}, files=edit_files())
        assert edited.status_code == 400  # its reference passes (refs are not judged); its output does not
        assert edited.json()["error"]["code"] == "moderation_blocked"
        assert edited.json()["error"]["param"] is None


@pytest.mark.parametrize(("threshold", "partials"), [(PASS_ALL, 2), (BLOCK_ALL, 0)])
def test_a_stream_shows_no_partial_image_the_filter_would_block(
    make_app: Callable[..., FastAPI], classifier_dir: Path, threshold: float, partials: int
) -> None:
    app = make_app(models=["tiny-random-base"], **filtering(classifier_dir, "outputs", threshold))
    body = {"prompt": "a harbour", "size": "64x64", "stream": True, "partial_images": 2, "steps": 6}
    with TestClient(app) as client:
        response = client.post("/v1/images/generations", json=body)
    events = [event for event, _ in sse_lines(response)]
    assert events.count("image_generation.partial_image") == partials
    if partials:
        assert events[-1] == "image_generation.completed"
    else:
        assert events == ["error"]
        assert sse_lines(response)[-1][1]["error"]["code"] == "moderation_blocked"


# -- the jobs API (async) and its webhook --------------------------------------------------------
@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver([Answer(204)])
    yield started
    started.close()


def test_jobs_api_refuses_a_blocked_reference_and_runs_a_passed_one(
    make_server: Callable[..., LiveServer], classifier_dir: Path
) -> None:
    blocking = make_server(**filtering(classifier_dir, "refs", BLOCK_ALL))
    data = {"prompt": "the same scene", "model": "tiny-random", "size": "64x64"}
    refused = blocking.http.post(JOBS, data=data, files=edit_files())
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "moderation_blocked"
    assert blocking.http.get(JOBS).json()["data"] == []
    passing = make_server(
        **filtering(classifier_dir, "refs", PASS_ALL), data_dir=blocking.services.settings.data_dir.with_name("other")
    )
    accepted = passing.http.post(JOBS, data=data, files=edit_files())
    assert accepted.status_code == 202, accepted.text
    assert passing.wait_status(accepted.json()["id"], "succeeded")["request"]["references"] == 1


def test_jobs_api_fails_a_blocked_job_and_its_webhook_says_why(
    make_server: Callable[..., LiveServer], classifier_dir: Path, receiver: Receiver
) -> None:
    server = make_server(webhook_secret=SECRET, **filtering(classifier_dir, "outputs", BLOCK_ALL))
    job = server.submit({**QUICK, "webhook_url": receiver.url, "webhook_events": ["failed", "completed"]})
    failed = server.wait_status(job["id"], "failed", "succeeded")
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "moderation_blocked"
    assert "content filter withheld" in failed["error"]["message"]
    assert stored_outputs(server.app) == []

    wait_for(lambda: len(receiver.requests) == 1, "the failed job's webhook")
    body = Webhook(SECRET).verify(receiver.requests[0].body, receiver.requests[0].headers)
    assert body["type"] == "job.failed"
    assert body["data"]["id"] == job["id"]
    assert body["data"]["error"] == failed["error"]
    assert json.loads(receiver.requests[0].body)["data"]["status"] == "failed"


def test_jobs_api_passes_outputs_under_the_threshold(
    make_server: Callable[..., LiveServer], classifier_dir: Path
) -> None:
    server = make_server(**filtering(classifier_dir, "both", PASS_ALL))
    done = server.submit({**QUICK, "n": 2}, headers=PREFER_WAIT)
    assert done["status"] == "succeeded"
    assert len(stored_outputs(server.app)) == 2
