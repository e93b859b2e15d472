"""Replicate's API through the official ``replicate`` client, pointed at a real fluxserve on loopback."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ReplicateError
from standardwebhooks.webhooks import Webhook

from fluxserve.api.routes import replicate as routes
from fluxserve.webhooks.secret import new_secret
from tests.helpers import TEST_TIMEOUT, photo, png_bytes, wait_for
from tests.jobs_support import SLOW, LiveServer
from tests.webhook_receiver import Answer, Receiver

SECRET = new_secret()
DEV = "black-forest-labs/flux-2-dev"
SMALL = {"aspect_ratio": "custom", "width": 64, "height": 64, "steps": 2, "output_format": "png"}


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    aliases = {"flux-2-dev": "tiny-random-base"}
    return make_server(model_aliases=aliases, webhook_secret=SECRET)


@pytest.fixture
def make_client(server: LiveServer) -> Iterator[Callable[[str], replicate.Client]]:
    """The official client, pointed at the server: its base URL is the one thing a client changes."""
    made: list[replicate.Client] = []

    def make(token: str) -> replicate.Client:
        made.append(replicate.Client(api_token=token, base_url=server.url, timeout=TEST_TIMEOUT))
        return made[-1]

    yield make
    for client in made:
        client._client.close()


@pytest.fixture
def client(make_client: Callable[[str], replicate.Client]) -> replicate.Client:
    return make_client("r8_unused-on-loopback")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver([Answer(204)])
    yield started
    started.close()


def fetched(url: str) -> bytes:
    response = httpx.get(url, timeout=TEST_TIMEOUT)
    assert response.status_code == 200, response.text
    return response.content


def test_run_text_to_image(client: replicate.Client, server: LiveServer) -> None:
    output = client.run(DEV, input={"prompt": "a lighthouse", **SMALL, "width": 128})
    assert isinstance(output, str)
    assert output.startswith(server.url)
    image = Image.open(io.BytesIO(fetched(output)))
    assert (image.format, image.size) == ("PNG", (128, 64))


def test_run_with_a_local_file_as_input_image(client: replicate.Client, server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "reference.png"
    path.write_bytes(png_bytes(photo(96, 64)))
    with path.open("rb") as file:
        output = client.run(DEV, input={"prompt": "the same, at night", "input_images": [file], **SMALL})
    assert Image.open(io.BytesIO(fetched(output))).size == (64, 64)
    [job] = server.service.history(None, limit=1).jobs
    assert (job.spec.operation, job.spec.references) == ("edit", 1)


def test_files_upload_get_download_delete(client: replicate.Client, server: LiveServer) -> None:
    data = png_bytes(photo(32, 32))
    uploaded = client.files.create(io.BytesIO(data), filename="cat.png", metadata={"for": "test"})
    assert (uploaded.name, uploaded.content_type, uploaded.size) == ("cat.png", "image/png", len(data))
    assert uploaded.urls["get"] == f"{server.url}/v1/files/{uploaded.id}"
    assert client.files.get(uploaded.id).metadata == {"for": "test"}
    assert server.http.get(f"/v1/files/{uploaded.id}/download").content == data
    client.files.delete(uploaded.id)
    assert server.http.get(f"/v1/files/{uploaded.id}").status_code == 404


def test_match_input_image_from_a_data_uri(client: replicate.Client) -> None:
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(photo(128, 64))).decode()
    inputs = {"prompt": "wide", "input_images": [uri], "aspect_ratio": "match_input_image", "resolution": "0.03 MP"}
    output = client.run(DEV, input={**inputs, "steps": 2, "output_format": "jpg", "output_quality": 90})
    image = Image.open(io.BytesIO(fetched(output)))
    assert image.format == "JPEG"
    assert image.size[0] == 2 * image.size[1]


def test_same_seed_same_bytes(client: replicate.Client) -> None:
    first = client.run(DEV, input={"prompt": "a fox", "seed": 42, **SMALL})
    second = client.run(DEV, input={"prompt": "a fox", "seed": 42, **SMALL})
    third = client.run(DEV, input={"prompt": "a fox", "seed": 43, **SMALL})
    assert first != second  # two predictions, two URLs
    assert fetched(first) == fetched(second) != fetched(third)


def test_create_get_list_and_wait(client: replicate.Client, server: LiveServer) -> None:
    prediction = client.models.predictions.create(model=DEV, input={"prompt": "a kite", "seed": 5, **SMALL})
    assert prediction.status in ("starting", "processing", "succeeded")
    assert prediction.urls is not None
    assert prediction.urls["get"].endswith(f"/v1/predictions/{prediction.id}")
    prediction.wait()
    assert prediction.status == "succeeded"
    assert prediction.input is not None
    assert prediction.input["seed"] == 5
    assert prediction.metrics is not None
    assert prediction.metrics["predict_time"] >= 0
    assert prediction.logs is not None
    assert "Using seed: 5" in prediction.logs
    assert prediction.progress is not None
    assert prediction.progress.current == prediction.progress.total == 2
    assert client.predictions.get(prediction.id).output == prediction.output
    assert prediction.id in [p.id for p in client.predictions.list().results]


def test_version_names_the_model_and_pages_link_onwards(server: LiveServer) -> None:
    for seed in range(3):
        body = {"version": "tiny-random-base", "input": {"prompt": "page", "seed": seed, **SMALL}}
        response = server.http.post("/v1/predictions", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["status"] in ("starting", "processing", "succeeded")
    routes.PAGE_SIZE, size = 2, routes.PAGE_SIZE
    try:
        page = server.http.get("/v1/predictions").json()
        assert len(page["results"]) == 2
        assert page["previous"] is None
        rest = httpx.get(page["next"], timeout=TEST_TIMEOUT).json()
    finally:
        routes.PAGE_SIZE = size
    assert len(rest["results"]) == 1
    assert rest["next"] is None


def test_sync_wait_answers_the_finished_prediction(server: LiveServer) -> None:
    body = {"input": {"prompt": "now", **SMALL}}
    response = server.http.post(f"/v1/models/{DEV}/predictions", json=body, headers={"Prefer": "wait"})
    assert response.status_code == 201
    assert response.headers["preference-applied"].startswith("wait=")
    prediction = response.json()
    assert prediction["status"] == "succeeded"
    assert prediction["output"].startswith(server.url)
    assert prediction["completed_at"].endswith("Z")


def test_cancel_a_queued_prediction(client: replicate.Client, server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    prediction = client.models.predictions.create(model=DEV, input={"prompt": "never", **SMALL})
    assert prediction.status == "starting"
    prediction.cancel()
    assert prediction.status == "canceled"
    assert client.predictions.get(prediction.id).status == "canceled"
    assert server.service.store.get(prediction.id).attempts == 0  # type: ignore[union-attr]
    server.http.post(blocker["urls"]["cancel"])


def test_cancel_a_finished_prediction_is_409(client: replicate.Client, server: LiveServer) -> None:
    response = server.http.post(
        f"/v1/models/{DEV}/predictions", json={"input": {"prompt": "done", **SMALL}}, headers={"Prefer": "wait"}
    )
    with pytest.raises(ReplicateError) as finished:
        client.predictions.cancel(response.json()["id"])
    assert finished.value.status == 409
    assert finished.value.title == "job_finished"


@pytest.mark.parametrize(
    ("inputs", "field", "status"),
    [
        ({"prompt": "x", "num_outputs": 2}, "input.num_outputs", 422),
        ({"prompt": "x", "width": 64, "height": 64}, "input.width", 422),
        ({"prompt": "x", "go_fast": True}, "input.go_fast", 422),
        ({"prompt": "x", "aspect_ratio": "7:5"}, "input.aspect_ratio", 422),
        ({"prompt": "x", "input_images": ["https://example.com/a.png"]}, "input.input_images[0]", 422),
        ({"seed": 1}, "input.prompt", 422),
    ],
)
def test_a_bad_input_is_a_problem_detail(
    client: replicate.Client, inputs: dict[str, Any], field: str, status: int
) -> None:
    with pytest.raises(ReplicateError) as refused:
        client.run(DEV, input=inputs)
    assert refused.value.status == status
    assert refused.value.detail is not None
    assert field.removeprefix("input.").split("[")[0] in refused.value.detail


def test_an_unknown_model_is_404(client: replicate.Client) -> None:
    with pytest.raises(ReplicateError) as refused:
        client.run("someone/not-served", input={"prompt": "x"})
    assert refused.value.status == 404
    assert refused.value.title == "model_not_found"


def test_a_wrong_key_is_401_and_the_right_one_works(
    server: LiveServer, make_client: Callable[[str], replicate.Client]
) -> None:
    _, secret = server.service.keys.create("replicate-user")
    wrong = make_client("fsk_wrong")
    with pytest.raises(ReplicateError) as refused:
        wrong.run(DEV, input={"prompt": "x", **SMALL})
    assert refused.value.status == 401
    right = make_client(secret)
    assert right.run(DEV, input={"prompt": "x", **SMALL}).startswith(server.url)


def verified(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    wait_for(lambda: len(receiver.requests) >= count, f"{count} webhooks")
    return [Webhook(SECRET).verify(request.body, request.headers) for request in receiver.requests]


@pytest.mark.parametrize("event", ["completed", "output"])
def test_webhooks_send_the_finished_prediction(client: replicate.Client, receiver: Receiver, event: str) -> None:
    prediction = client.models.predictions.create(
        model=DEV, input={"prompt": "hooked", **SMALL}, webhook=receiver.url, webhook_events_filter=[event]
    )
    prediction.wait()
    [body] = verified(receiver, 1)
    assert (body["id"], body["status"]) == (prediction.id, "succeeded")
    assert body["output"] == prediction.output
    assert body["version"] == prediction.version == "hidden"  # it named the model, as Replicate's answer


def test_webhooks_carry_the_version_the_prediction_pinned(client: replicate.Client, receiver: Receiver) -> None:
    version = client.models.get(DEV).latest_version
    assert version is not None
    prediction = client.predictions.create(
        version=version.id,
        input={"prompt": "pinned", **SMALL},
        webhook=receiver.url,
        webhook_events_filter=["start", "logs", "completed"],
    )
    prediction.wait()
    wait_for(lambda: any(b'"succeeded"' in request.body for request in receiver.requests), "the completed webhook")
    bodies = verified(receiver, 2)  # start, maybe logs, completed
    assert {body["version"] for body in bodies} == {version.id}
    assert {body["status"] for body in bodies} >= {"processing", "succeeded"}


def test_webhooks_start_and_logs(client: replicate.Client, receiver: Receiver) -> None:
    prediction = client.models.predictions.create(
        model=DEV,
        input={"prompt": "every event", **SMALL, "steps": 3},
        webhook=receiver.url,
        webhook_events_filter=["start", "logs"],
    )
    prediction.wait()
    bodies = verified(receiver, 2)
    assert bodies[0]["status"] == "processing"
    assert all(body["status"] == "processing" for body in bodies)
    assert any("/3" in body["logs"] for body in bodies[1:])


def test_a_webhook_filter_needs_a_webhook(server: LiveServer) -> None:
    body = {"input": {"prompt": "x"}, "webhook_events_filter": ["completed"]}
    response = server.http.post(f"/v1/models/{DEV}/predictions", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.text)["detail"] == "webhook_events_filter needs webhook"


def test_an_output_link_feeds_the_next_prediction(client: replicate.Client, server: LiveServer) -> None:
    first = client.run(DEV, input={"prompt": "a boat", **SMALL})
    second = client.run(DEV, input={"prompt": "the boat at dusk", "input_images": [first], **SMALL})
    assert Image.open(io.BytesIO(fetched(second))).size == (64, 64)
    [job, _] = server.service.history(None, limit=2).jobs
    assert job.spec.references == 1


class _ImageHost:
    """An image host on loopback: GET answers one PNG."""

    def __init__(self, data: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://localhost:{self.server.server_address[1]}/photo.png"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_only_allow_listed_hosts_are_fetched(make_server: Callable[..., LiveServer]) -> None:
    host = _ImageHost(png_bytes(photo(64, 64)))
    try:
        for allowed, status in (([], 422), (["localhost"], 201)):
            server = make_server(model_aliases={"flux-2-dev": "tiny-random-base"}, replicate_fetch_hosts=allowed)
            body = {"input": {"prompt": "fetched", "input_images": [host.url], **SMALL}}
            response = server.http.post(f"/v1/models/{DEV}/predictions", json=body, headers={"Prefer": "wait"})
            assert response.status_code == status, response.text
        assert response.json()["status"] == "succeeded"
    finally:
        host.close()


def test_a_file_belongs_to_the_key_that_uploaded_it(
    server: LiveServer, make_client: Callable[[str], replicate.Client]
) -> None:
    _, alice_key = server.service.keys.create("alice")
    _, bob_key = server.service.keys.create("bob")
    alice, bob = make_client(alice_key), make_client(bob_key)
    uploaded = alice.files.create(io.BytesIO(png_bytes(photo(64, 64))), filename="mine.png")
    with pytest.raises(ReplicateError) as hidden:
        bob.files.get(uploaded.id)
    assert hidden.value.status == 404
    with pytest.raises(ReplicateError) as refused:
        bob.run(DEV, input={"prompt": "not yours", "input_images": [uploaded.urls["get"]], **SMALL})
    assert refused.value.status == 422
    assert alice.run(DEV, input={"prompt": "mine", "input_images": [uploaded.urls["get"]], **SMALL})


def test_an_upload_over_the_limit_is_413(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(max_upload_mb=0.001)
    response = server.http.post("/v1/files", files={"content": ("big.png", b"x" * 2000, "image/png")})
    assert response.status_code == 413
    assert response.json()["title"] == "payload_too_large"


def test_replicate_token_scheme_carries_the_key_too(server: LiveServer) -> None:
    _, secret = server.service.keys.create("curl-user")
    for scheme, status in (("Token", 200), ("Bearer", 200), ("Token", 401)):
        key = secret if status == 200 else "fsk_wrong"
        response = server.http.get("/v1/predictions", headers={"Authorization": f"{scheme} {key}"})
        assert response.status_code == status, response.text
