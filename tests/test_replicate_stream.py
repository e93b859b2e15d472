"""A prediction's ``urls.stream``, read by the official ``replicate`` client and resumed with Last-Event-ID."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator

import httpx
import pytest
import replicate
from PIL import Image
from replicate.stream import ServerSentEvent

from fluxserve.api.app import create_app
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.settings import Settings
from tests.helpers import TEST_TIMEOUT
from tests.jobs_support import SLOW, LiveServer
from tests.servers import serve_in_thread
from tests.test_jobs_api import BreaksOnPrompt

DEV = "black-forest-labs/flux-2-dev"
SMALL = {"aspect_ratio": "custom", "width": 64, "height": 64, "steps": 3, "output_format": "png"}
Event = ServerSentEvent.EventType


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(model_aliases={"flux-2-dev": "tiny-random-base"})


@pytest.fixture
def client(server: LiveServer) -> Iterator[replicate.Client]:
    made = replicate.Client(api_token="r8_unused-on-loopback", base_url=server.url, timeout=TEST_TIMEOUT)
    yield made
    made._client.close()


def read_events(response: httpx.Response) -> list[tuple[str, str, str]]:
    """(id, event, data) of each event of a finished stream, comments skipped."""
    events = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith((":", "retry")))
        if fields:
            events.append((fields["id"], fields["event"], fields["data"]))
    return events


def test_client_stream_yields_the_logs_the_output_url_and_done(client: replicate.Client) -> None:
    events = list(client.stream(DEV, input={"prompt": "a lighthouse", "seed": 7, **SMALL}))
    kinds = [event.event for event in events]
    assert kinds[-2:] == [Event.OUTPUT, Event.DONE]
    assert set(kinds[:-2]) == {Event.LOGS}
    logs = [event.data for event in events if event.event is Event.LOGS]
    assert "Using seed: 7" in logs
    assert logs[-1].endswith("| 3/3")  # the tqdm-style line the client's progress parser reads
    output = events[-2].data
    assert isinstance(output, str)
    image = Image.open(io.BytesIO(httpx.get(output, timeout=TEST_TIMEOUT).content))
    assert (image.format, image.size) == ("PNG", (64, 64))
    assert json.loads(events[-1].data) == {}
    assert all(event.id for event in events)


def test_prediction_stream_of_a_finished_prediction(client: replicate.Client) -> None:
    prediction = client.models.predictions.create(model=DEV, input={"prompt": "a kite", **SMALL})
    prediction.wait()
    events = list(prediction.stream())
    assert [event.event for event in events] == [Event.OUTPUT, Event.DONE]
    assert str(events[0]) == prediction.output
    assert prediction.urls is not None
    assert prediction.urls["stream"] == f"{prediction.urls['get']}/stream"


def test_a_canceled_prediction_ends_its_stream_with_done_canceled(client: replicate.Client, server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    prediction = client.models.predictions.create(model=DEV, input={"prompt": "never", **SMALL})
    stream = prediction.stream()
    first = next(stream)
    assert (first.event, first.data) == (Event.LOGS, "Waiting in the queue, position 1")
    assert server.http.post(f"/v1/predictions/{prediction.id}/cancel").status_code == 200
    rest = list(stream)
    assert [event.event for event in rest][-1] is Event.DONE
    assert json.loads(rest[-1].data) == {"reason": "canceled"}
    assert Event.OUTPUT not in [event.event for event in rest]
    server.http.post(blocker["urls"]["cancel"])


def test_a_failed_prediction_raises_its_error_in_the_client(
    make_settings: Callable[..., Settings], options: EngineOptions, engines: dict[str, DiffusersEngine]
) -> None:
    engine = BreaksOnPrompt("tiny-random-base", options)
    engine.load()
    settings = make_settings(models=["tiny-random-base"], model_aliases={"flux-2-dev": "tiny-random-base"})
    app = create_app(settings, {"tiny-random-base": engine})
    with serve_in_thread(app) as url, LiveServer(app, url) as server:
        client = replicate.Client(api_token="r8_unused", base_url=url, timeout=TEST_TIMEOUT)
        seen: list[ServerSentEvent] = []
        with pytest.raises(RuntimeError) as failed:
            seen.extend(client.stream(DEV, input={"prompt": "break", **SMALL, "steps": 5}))
        assert "failed" in json.loads(str(failed.value))["detail"]
        assert all(event.event is Event.LOGS for event in seen)
        [job] = server.service.history(None, limit=1).jobs
        response = server.http.get(f"/v1/predictions/{job.id}/stream")
        assert [event for _, event, _ in read_events(response)] == ["error", "done"]
        assert json.loads(read_events(response)[-1][2]) == {"reason": "error"}
        client._client.close()


def test_last_event_id_resumes_where_the_client_left_off(server: LiveServer) -> None:
    body = {"input": {"prompt": "resumable", **SMALL}}
    prediction = server.http.post(f"/v1/models/{DEV}/predictions", json=body).json()
    stream_url = prediction["urls"]["stream"]
    whole = read_events(server.http.get(stream_url))  # followed live to the end
    assert [event for _, event, _ in whole[-2:]] == ["output", "done"]
    progress = next(index for index, (_, _, data) in enumerate(whole) if data.endswith("| 1/3"))
    resumed = read_events(server.http.get(stream_url, headers={"Last-Event-ID": whole[progress][0]}))
    assert resumed == whole[progress + 1 :]
    # within the last job event: the rest of its events, then nothing (204 stops EventSource retries)
    output_id = whole[-2][0]
    assert read_events(server.http.get(stream_url, headers={"Last-Event-ID": output_id})) == whole[-1:]
    assert server.http.get(stream_url, headers={"Last-Event-ID": whole[-1][0]}).status_code == 204
    # a finished prediction's stream read afresh: output and done, resumable the same way
    fresh = read_events(server.http.get(stream_url))
    assert [(event, data) for _, event, data in fresh] == [(event, data) for _, event, data in whole[-2:]]
    assert read_events(server.http.get(stream_url, headers={"Last-Event-ID": fresh[0][0]})) == fresh[1:]


def test_another_keys_prediction_stream_is_404(server: LiveServer) -> None:
    _, alice = server.service.keys.create("alice")
    _, bob = server.service.keys.create("bob")
    body = {"input": {"prompt": "mine", **SMALL}}
    made = server.http.post(
        f"/v1/models/{DEV}/predictions", json=body, headers={"Authorization": f"Bearer {alice}", "Prefer": "wait"}
    )
    stream_url = made.json()["urls"]["stream"]
    refused = server.http.get(stream_url, headers={"Authorization": f"Bearer {bob}"})
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"
    assert server.http.get(stream_url, headers={"Authorization": f"Bearer {alice}"}).status_code == 200
