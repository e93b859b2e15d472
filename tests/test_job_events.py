"""GET /v1/jobs/{id}/events read by a real SSE client (httpx-sse) from a real server on loopback;
and ``stream: true`` on the images endpoints, read raw. On SQLite, and on Postgres, where every
event goes through the events table and back (tests/test_event_relay.py has several processes)."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx_sse import ServerSentEvent, connect_sse
from PIL import Image

from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, photo, png_bytes, unsigned, wait_for
from tests.jobs_support import QUICK, SLOW, LiveServer, sse_lines
from tests.postgres_support import BOTH_DATABASES

pytestmark = BOTH_DATABASES


def sequence(event_id: str) -> int:
    """The order of an event id: ``<boot>-<sequence>`` on SQLite, the events table's ``<sequence>`` on Postgres."""
    return int(event_id.rpartition("-")[2])


def events_of(
    server: LiveServer,
    job: dict[str, Any],
    last_event_id: str | None = None,
    until: Callable[[ServerSentEvent], bool] | None = None,
) -> list[ServerSentEvent]:
    """Read a job's events until the stream ends (or ``until`` says stop)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    received = []
    with connect_sse(server.http, "GET", job["urls"]["events"], headers=headers) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for event in source.iter_sse():
            received.append(event)
            if until is not None and until(event):
                break
    return received


def test_a_watcher_sees_queued_started_every_step_in_order_then_completed(server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    job = server.submit({**QUICK, "steps": 5})

    received: list[ServerSentEvent] = []
    with connect_sse(server.http, "GET", job["urls"]["events"]) as source:
        for event in source.iter_sse():
            received.append(event)
            if event.event == "queued":
                server.http.post(blocker["urls"]["cancel"])  # let ours start

    kinds = [event.event for event in received]
    assert kinds == ["queued", "started"] + ["progress"] * 5 + ["completed"]
    assert received[0].json() == {"job_id": job["id"], "position": 1}
    steps = [event.json() for event in received if event.event == "progress"]
    assert [(s["step"], s["total"]) for s in steps] == [(step, 5) for step in range(1, 6)]
    assert all("preview" not in s for s in steps)  # previews are off by default
    final = received[-1].json()
    assert final["status"] == "succeeded"
    assert urlsplit(final["images"][0]["url"]).path.endswith(".png")
    live_ids = [sequence(event.id) for event in received[1:]]
    assert live_ids == sorted(live_ids)
    assert received[0].retry == 2000


def test_a_reconnect_with_last_event_id_gets_exactly_what_it_missed(server: LiveServer) -> None:
    job = server.submit({**SLOW, "steps": 40})
    first = events_of(server, job, until=lambda event: event.event == "progress" and event.json()["step"] >= 3)
    last = first[-1]

    rest = events_of(server, job, last_event_id=last.id)
    steps = [event.json()["step"] for event in first + rest if event.event == "progress"]
    assert steps[-1] == 40
    assert steps[steps.index(last.json()["step"]) :] == list(range(last.json()["step"], 41))
    assert rest[-1].event == "completed"
    assert len({event.id for event in first + rest}) == len(first + rest)  # nothing twice


def test_any_number_of_clients_watch_one_job(server: LiveServer) -> None:
    job = server.submit({**SLOW, "steps": 30})
    finals: list[dict[str, Any]] = []

    def watch() -> None:
        finals.append(events_of(server, job)[-1].json())

    watchers = [threading.Thread(target=watch) for _ in range(4)]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        watcher.join(TEST_TIMEOUT)
    assert len(finals) == 4
    assert all(final["status"] == "succeeded" and final["id"] == job["id"] for final in finals)


def test_a_finished_job_sends_its_end_and_a_watcher_that_has_it_gets_204(server: LiveServer) -> None:
    job = server.submit(QUICK, headers=PREFER_WAIT)
    received = events_of(server, job)
    assert [event.event for event in received] == ["completed"]
    assert received[0].id == "end"
    assert unsigned(received[0].json())["images"] == unsigned(job)["images"]

    again = server.http.get(job["urls"]["events"], headers={"Last-Event-ID": "end"})
    assert again.status_code == 204


def test_a_watcher_whose_last_event_was_the_live_end_gets_204(server: LiveServer) -> None:
    job = server.submit({**QUICK, "steps": 20})
    received = events_of(server, job)
    assert received[-1].event == "completed"
    response = server.http.get(job["urls"]["events"], headers={"Last-Event-ID": received[-1].id})
    assert response.status_code == 204


def test_an_unknown_last_event_id_gets_the_current_state(server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    job = server.submit(QUICK)
    received = events_of(server, job, last_event_id="999-12", until=lambda event: True)
    assert received[0].event == "queued"
    assert received[0].json()["position"] == 1
    server.http.post(blocker["urls"]["cancel"])


def test_a_watcher_of_a_running_job_sees_it_canceled(server: LiveServer) -> None:
    job = server.submit({**SLOW, "size": "512x512"})
    received: list[ServerSentEvent] = []
    with connect_sse(server.http, "GET", job["urls"]["events"]) as source:
        for event in source.iter_sse():
            received.append(event)
            if event.event == "progress":
                server.http.post(job["urls"]["cancel"])
    assert received[-1].event == "canceled"
    assert received[-1].json()["status"] == "canceled"
    assert "images" not in received[-1].json()


def test_a_quiet_stream_sends_keep_alive_comments(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(sse_keepalive_seconds=0.05)
    blocker = server.submit(SLOW)
    job = server.submit(QUICK)
    comments = 0
    with server.http.stream("GET", job["urls"]["events"]) as response:
        for line in response.iter_lines():
            comments += line == ": keep-alive"
            if comments == 2:
                break
    assert comments == 2
    server.http.post(blocker["urls"]["cancel"])


def test_previews_come_at_the_configured_interval(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(preview_every=2)
    blocker = server.submit(SLOW)
    job = server.submit({**QUICK, "size": "128x64", "steps": 5})
    received = []
    with connect_sse(server.http, "GET", job["urls"]["events"]) as source:
        for event in source.iter_sse():
            received.append(event)
            if event.event == "queued":
                server.http.post(blocker["urls"]["cancel"])
    steps = [event.json() for event in received if event.event == "progress"]
    assert [s["step"] for s in steps if "preview" in s] == [2, 4]
    for step in steps:
        if "preview" in step:
            header, data = step["preview"].split(",", 1)
            assert header == "data:image/jpeg;base64"
            preview = Image.open(io.BytesIO(base64.b64decode(data)))
            assert preview.format == "JPEG"
            assert preview.size == (16, 8)  # the latent grid: 1/8 of the image


def test_stream_true_sends_partial_images_then_the_completed_image(server: LiveServer) -> None:
    body = {**QUICK, "size": "128x128", "steps": 8, "stream": True, "partial_images": 3}
    response = server.http.post("/v1/images/generations", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_lines(response)
    assert [kind for kind, _ in events] == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert [data["partial_image_index"] for _, data in events[:3]] == [0, 1, 2]
    for kind, data in events:
        assert data["type"] == kind
        assert data["size"] == "128x128"
        assert data["output_format"] == "png"
        assert Image.open(io.BytesIO(base64.b64decode(data["b64_json"]))).format == "PNG"
    completed = events[-1][1]
    assert Image.open(io.BytesIO(base64.b64decode(completed["b64_json"]))).size == (128, 128)
    assert completed["usage"]["steps"] == 8
    job = server.job(response.headers["x-job-id"])
    assert job["status"] == "succeeded"


def test_partial_images_of_an_edit_with_strength_spread_over_the_steps_it_runs(server: LiveServer) -> None:
    """Strength 0.5 of 8 steps runs 4: three partial images after steps 1, 2 and 3 (spread over the
    nominal 8 they fell after steps 2 and 4, the last: two partial images, one of them the final one)."""
    source = base64.b64encode(png_bytes(photo(128, 128))).decode()
    body = {**QUICK, "images": [source], "strength": 0.5, "steps": 8, "stream": True, "partial_images": 3}
    del body["size"]  # an edit with strength keeps the image's size
    response = server.http.post("/v1/images/edits", json=body)
    assert response.status_code == 200, response.text
    events = sse_lines(response)
    assert [kind for kind, _ in events] == ["image_edit.partial_image"] * 3 + ["image_edit.completed"]
    assert [data["partial_image_index"] for _, data in events[:3]] == [0, 1, 2]
    assert events[-1][1]["size"] == "128x128"


def test_progress_of_an_edit_with_strength_counts_the_steps_it_runs(server: LiveServer) -> None:
    source = base64.b64encode(png_bytes(photo(128, 128))).decode()
    job = server.submit({**QUICK, "images": [source], "strength": 0.5, "steps": 8, "size": "128x128"})
    received = events_of(server, job)
    steps = [event.json() for event in received if event.event == "progress"]
    assert [(s["step"], s["total"]) for s in steps] == [(step, 4) for step in range(1, 5)]
    assert received[-1].json()["status"] == "succeeded"


def test_a_stream_whose_job_is_canceled_ends_with_an_error_event(server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    outcome: dict[str, httpx.Response] = {}

    def stream() -> None:
        outcome["response"] = server.http.post("/v1/images/generations", json={**QUICK, "stream": True})

    thread = threading.Thread(target=stream)
    thread.start()
    wait_for(lambda: len(server.http.get("/v1/jobs").json()["data"]) == 2)
    streamed = server.http.get("/v1/jobs", params={"status": "queued"}).json()["data"][0]
    server.http.post(streamed["urls"]["cancel"])
    thread.join(TEST_TIMEOUT)
    kind, data = sse_lines(outcome["response"])[-1]
    assert kind == "error"
    assert data["error"]["code"] == "cancelled"
    server.http.post(blocker["urls"]["cancel"])


def test_a_stream_client_that_leaves_before_its_job_starts_cancels_it(server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    with server.http.stream("POST", "/v1/images/generations", json={**QUICK, "stream": True}) as response:
        job_id = response.headers["x-job-id"]
    wait_for(lambda: server.job(job_id)["status"] == "canceled")
    server.http.post(blocker["urls"]["cancel"])


def test_a_queued_watcher_hears_its_position_move_up(server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    ahead = [server.submit(QUICK) for _ in range(2)]
    job = server.submit(QUICK)
    positions = []
    with connect_sse(server.http, "GET", job["urls"]["events"]) as source:
        for event in source.iter_sse():
            if event.event != "queued":
                break
            positions.append(event.json()["position"])
            if len(positions) == 1:
                server.http.post(ahead[0]["urls"]["cancel"])  # one ahead leaves the queue
            if len(positions) == 2:
                server.http.post(blocker["urls"]["cancel"])  # the running one stops: the next starts
    assert positions == [3, 2, 1]
