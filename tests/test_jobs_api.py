"""The jobs API on a real server: submit, poll, Prefer: wait, cancel, delete, history, retention,
idempotency, backpressure and engine faults."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from fluxserve.api.app import create_app
from fluxserve.engines.base import GenerationRequest, GenerationResult, Progress, ProgressCallback
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.imaging.encode import ImageFormat
from fluxserve.settings import Settings
from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, photo, png_bytes, wait_for
from tests.jobs_support import JOBS, QUICK, SLOW, LiveServer
from tests.postgres_support import BOTH_DATABASES
from tests.servers import serve_in_thread

pytestmark = BOTH_DATABASES  # the whole jobs API on SQLite, then on Postgres


def test_submit_answers_202_at_once_and_the_job_is_pollable_to_its_images(server: LiveServer) -> None:
    response = server.http.post(JOBS, json={**QUICK, "seed": 11, "n": 2})
    assert response.status_code == 202
    job = response.json()
    assert job["id"].startswith("job_")
    assert job["status"] in ("queued", "running")
    assert isinstance(job["created"], int)
    assert job["urls"] == {
        "get": f"{server.url}/v1/jobs/{job['id']}",
        "cancel": f"{server.url}/v1/jobs/{job['id']}/cancel",
        "events": f"{server.url}/v1/jobs/{job['id']}/events",
    }
    assert response.headers["location"] == job["urls"]["get"]

    done = server.wait_status(job["id"], "succeeded")
    assert [image["seed"] for image in done["images"]] == [11, 12]
    assert done["usage"] == {"input_megapixels": 0.0, "output_megapixels": 0.0078, "steps": 6, "images": 2}
    assert done["started_at"] >= done["created_at"]
    assert done["finished_at"] >= done["started_at"]
    assert done["request"]["seed"] == 11
    assert "error" not in done
    for image in done["images"]:
        fetched = httpx.get(image["url"], timeout=TEST_TIMEOUT)
        assert fetched.status_code == 200
        assert Image.open(io.BytesIO(fetched.content)).size == (64, 64)


def test_multipart_jobs_take_reference_images(server: LiveServer) -> None:
    files = [("image[]", ("a.png", png_bytes(photo(96, 64)), "image/png"))]
    response = server.http.post(
        JOBS, data={"prompt": "the same scene", "model": "tiny-random", "size": "64x64"}, files=files
    )
    assert response.status_code == 202, response.text
    done = server.wait_status(response.json()["id"], "succeeded")
    assert done["request"]["references"] == 1
    assert done["usage"]["input_megapixels"] > 0


def test_prefer_wait_returns_the_finished_job(server: LiveServer) -> None:
    response = server.http.post(JOBS, json=QUICK, headers={"Prefer": "respond-async, wait=30"})
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=30"
    assert response.json()["status"] == "succeeded"
    assert len(response.json()["images"]) == 1


def test_prefer_wait_gives_up_after_n_seconds_with_202(server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    response = server.http.post(JOBS, json=QUICK, headers={"Prefer": "wait=0"})
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.json()["position"] == 1
    server.http.post(f"{JOBS}/{blocker['id']}/cancel")


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=-1", "wait"])
def test_a_malformed_prefer_wait_is_400(server: LiveServer, prefer: str) -> None:
    response = server.http.post(JOBS, json=QUICK, headers={"Prefer": prefer})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Prefer"


def test_jobs_refuse_stream_and_point_to_the_events(server: LiveServer) -> None:
    response = server.http.post(JOBS, json={**QUICK, "stream": True})
    assert response.status_code == 400
    assert "/events" in response.json()["error"]["message"]
    assert server.http.get(JOBS).json()["data"] == []  # nothing was queued


def test_unknown_jobs_are_404_in_the_error_shape(server: LiveServer) -> None:
    for method, path in [
        ("GET", "/v1/jobs/job_doesnotexistdoesnotexist"),
        ("GET", "/v1/jobs/../etc/passwd"),
        ("GET", "/v1/jobs/job_doesnotexistdoesnotexist/events"),
        ("POST", "/v1/jobs/job_doesnotexistdoesnotexist/cancel"),
        ("DELETE", "/v1/jobs/job_doesnotexistdoesnotexist"),
    ]:
        response = server.http.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_cancel_while_queued_means_it_never_starts(server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    queued = server.submit(QUICK)
    assert queued["status"] == "queued"

    canceled = server.http.post(queued["urls"]["cancel"])
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    server.wait_status(blocker["id"], "succeeded")
    job = server.job(queued["id"])
    assert job["status"] == "canceled"
    assert "started_at" not in job
    assert server.service.store.get(queued["id"]).attempts == 0  # type: ignore[union-attr]


def test_cancel_while_running_stops_between_steps_and_keeps_no_image(server: LiveServer) -> None:
    job = server.submit({**SLOW, "steps": 100, "size": "512x512"})
    wait_for(lambda: server.service.progress(job["id"]) is not None)

    response = server.http.post(job["urls"]["cancel"])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "canceled"
    assert "images" not in body
    assert not server.service.files.has_output(job["id"], 0, ImageFormat.PNG)
    assert server.service.progress(job["id"]).step < 100  # type: ignore[union-attr]
    # the worker goes on with the next job
    assert server.submit(QUICK, headers=PREFER_WAIT)["status"] == "succeeded"


def test_cancel_of_a_finished_job_is_409(server: LiveServer) -> None:
    job = server.submit(QUICK, headers=PREFER_WAIT)
    response = server.http.post(job["urls"]["cancel"])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_finished"
    assert server.job(job["id"])["status"] == "succeeded"


def test_delete_removes_a_finished_job_and_its_files(
    make_server: Callable[..., LiveServer], storage: dict[str, Any]
) -> None:
    server = make_server(**storage)
    job = server.submit(QUICK, headers=PREFER_WAIT)
    assert server.service.files.has_output(job["id"], 0, ImageFormat.PNG)
    image_url = job["images"][0]["url"]
    assert httpx.get(image_url, timeout=TEST_TIMEOUT).status_code == 200

    assert server.http.delete(job["urls"]["get"]).status_code == 204
    assert server.http.get(job["urls"]["get"]).status_code == 404
    assert httpx.get(image_url, timeout=TEST_TIMEOUT).status_code == 404
    assert not server.service.files.has_output(job["id"], 0, ImageFormat.PNG)
    assert server.http.delete(job["urls"]["get"]).status_code == 404


def test_delete_of_an_unfinished_job_cancels_it(server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    queued = server.submit(QUICK)
    response = server.http.delete(queued["urls"]["get"])
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert server.http.delete(queued["urls"]["get"]).status_code == 204
    server.http.post(blocker["urls"]["cancel"])


def test_history_is_newest_first_with_cursor_pages_and_filters(server: LiveServer) -> None:
    made = []
    for index in range(5):
        model = "tiny-random" if index % 2 else "tiny-random-base"
        body = {"prompt": f"job {index}", "model": model, "size": "64x64"}
        made.append(server.submit(body, headers=PREFER_WAIT)["id"])
    blocker = server.submit(SLOW)
    canceled = server.submit(QUICK)
    server.http.post(canceled["urls"]["cancel"])
    server.http.post(blocker["urls"]["cancel"])
    newest_first = [canceled["id"], blocker["id"], *reversed(made)]

    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = server.http.get(JOBS, params=params).json()
        seen += [job["id"] for job in page["data"]]
        assert len(page["data"]) <= 3
        if not page["has_more"]:
            assert "next_cursor" not in page
            break
        cursor = page["next_cursor"]
    assert seen == newest_first

    by_model = server.http.get(JOBS, params={"model": "tiny-random"}).json()["data"]
    assert [job["id"] for job in by_model] == [made[3], made[1]]
    by_status = server.http.get(JOBS, params={"status": "canceled"}).json()["data"]
    assert {job["id"] for job in by_status} == {canceled["id"], blocker["id"]}
    both = server.http.get(JOBS, params={"status": "succeeded", "model": "tiny-random-base", "limit": 1}).json()
    assert [job["id"] for job in both["data"]] == [made[4]]
    assert both["has_more"] is True


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "done"}, "status"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"sort": "oldest"}, "sort"),
    ],
)
def test_bad_history_queries_are_400(server: LiveServer, params: dict[str, Any], param: str) -> None:
    response = server.http.get(JOBS, params=params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_finished_jobs_are_cleaned_up_after_the_retention_period(
    make_server: Callable[..., LiveServer], storage: dict[str, Any]
) -> None:
    server = make_server(job_retention_hours=0.5 / 3600, cleanup_interval_seconds=0.1, **storage)
    job = server.submit(QUICK, headers=PREFER_WAIT)
    assert server.service.files.has_output(job["id"], 0, ImageFormat.PNG)
    wait_for(lambda: server.http.get(job["urls"]["get"]).status_code == 404, "the job deleted")
    assert not server.service.files.has_output(job["id"], 0, ImageFormat.PNG)


def test_retention_keeps_unfinished_and_recent_jobs(server: LiveServer) -> None:
    old = server.submit(QUICK, headers=PREFER_WAIT)
    blocker = server.submit(SLOW)
    queued = server.submit(QUICK)
    hours = server.service.settings.job_retention_hours
    assert server.service.clean_up(now=old["finished_at"] + hours * 3600 - 1) == 0
    assert server.service.clean_up(now=old["finished_at"] + hours * 3600 + 1) == 1
    assert server.http.get(old["urls"]["get"]).status_code == 404
    assert server.job(blocker["id"])["status"] in ("queued", "running")
    assert server.job(queued["id"])["status"] == "queued"
    server.http.post(blocker["urls"]["cancel"])


def test_an_idempotency_key_replays_the_same_job_and_409s_a_different_body(server: LiveServer) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = server.http.post(JOBS, json={**QUICK, "prompt": "once"}, headers=headers)
    same_body_other_order = dict(reversed({**QUICK, "prompt": "once"}.items()))
    again = server.http.post(JOBS, json=same_body_other_order, headers=headers)
    assert first.status_code in (200, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers

    different = server.http.post(JOBS, json={**QUICK, "prompt": "twice"}, headers=headers)
    assert different.status_code == 409
    assert different.json()["error"]["code"] == "idempotency_key_reused"
    assert first.json()["id"] in different.json()["error"]["message"]
    assert len(server.http.get(JOBS).json()["data"]) == 1


def test_an_idempotency_key_on_the_sync_endpoint_never_pays_twice(server: LiveServer) -> None:
    headers = {"Idempotency-Key": "sync-7"}
    body = {**QUICK, "prompt": "pay once"}
    first = server.http.post("/v1/images/generations", json=body, headers=headers)
    second = server.http.post("/v1/images/generations", json=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-job-id"] == second.headers["x-job-id"]
    assert first.json()["data"] == second.json()["data"]
    assert len(server.http.get(JOBS).json()["data"]) == 1
    # the same key on another endpoint is another request
    assert server.http.post(JOBS, json=body, headers=headers).status_code == 409


def test_idempotency_holds_for_multipart_retries_with_a_new_boundary(server: LiveServer) -> None:
    headers = {"Idempotency-Key": "form-1"}
    files = [("image", ("a.png", png_bytes(photo(64, 64)), "image/png"))]
    data = {"prompt": "an edit", "model": "tiny-random", "size": "64x64"}
    first = server.http.post(JOBS, data=data, files=files, headers=headers)
    second = server.http.post(JOBS, data=data, files=files, headers=headers)
    assert first.json()["id"] == second.json()["id"]
    other_image = [("image", ("a.png", png_bytes(photo(64, 64, seed=1)), "image/png"))]
    assert server.http.post(JOBS, data=data, files=other_image, headers=headers).status_code == 409


@pytest.mark.parametrize("key", ["", "x" * 256, "white space", "ünïcode"])
def test_a_bad_idempotency_key_is_400(server: LiveServer, key: str) -> None:
    response = server.http.post(JOBS, json=QUICK, headers={"Idempotency-Key": key.encode()})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Idempotency-Key"


def test_a_full_queue_is_429_with_retry_after_and_no_job_is_lost(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(max_queue=2)
    running = server.submit(SLOW)
    wait_for(lambda: server.service.workers["tiny-random-base"].running_job is not None)
    waiting = [server.submit({**QUICK, "seed": i}) for i in range(2)]

    refused = server.http.post(JOBS, json=QUICK)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"
    sync_refused = server.http.post("/v1/images/generations", json=QUICK)
    assert sync_refused.status_code == 429  # the sync endpoints share the queue

    for job in [running, *waiting]:
        assert server.wait_status(job["id"], "succeeded")["status"] == "succeeded"
    assert len(server.http.get(JOBS).json()["data"]) == 3


def test_the_job_of_a_sync_request_is_pollable_by_its_x_job_id(server: LiveServer) -> None:
    response = server.http.post("/v1/images/generations", json={**QUICK, "seed": 5})
    job = server.job(response.headers["x-job-id"])
    assert job["status"] == "succeeded"
    assert job["images"][0]["seed"] == 5


class BreaksOnPrompt(DiffusersEngine):
    """The real engine, failing mid-run (at step 2) for the prompt "break", as a device fault would."""

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        def report(step: Progress) -> None:
            if request.prompt == "break" and step.step == 2:
                raise RuntimeError("simulated device fault")
            if progress is not None:
                progress(step)

        return super().generate(request, report, cancel)


def test_an_engine_error_mid_run_fails_the_job_and_the_worker_goes_on(
    make_settings: Callable[..., Settings], options: EngineOptions, engines: dict[str, DiffusersEngine]
) -> None:
    engine = BreaksOnPrompt("tiny-random-base", options)
    engine.load()
    settings = make_settings(models=["tiny-random-base"])
    app = create_app(settings, {"tiny-random-base": engine})
    with serve_in_thread(app) as url, LiveServer(app, url) as server:
        broken = server.submit({**QUICK, "prompt": "break", "steps": 5})
        after = server.submit({**QUICK, "prompt": "fine"})
        failed = server.wait_status(broken["id"], "failed")
        assert failed["error"]["type"] == "server_error"
        assert "failed" in failed["error"]["message"]
        assert "images" not in failed
        assert server.wait_status(after["id"], "succeeded")["images"]


def test_a_client_with_an_idempotency_key_that_times_out_finds_its_job_on_retry(server: LiveServer) -> None:
    blocker = server.submit(SLOW)
    headers = {"Idempotency-Key": "retry-after-timeout"}
    body = {**QUICK, "prompt": "worth waiting for"}
    with pytest.raises(httpx.ReadTimeout):
        server.http.post("/v1/images/generations", json=body, headers=headers, timeout=0.3)
    [waiting] = server.http.get(JOBS, params={"status": "queued"}).json()["data"]
    assert waiting["request"]["prompt"] == "worth waiting for"  # not canceled by the disconnect

    retried = server.http.post("/v1/images/generations", json=body, headers=headers)
    assert retried.status_code == 200
    assert retried.headers["x-job-id"] == waiting["id"]
    assert retried.headers["idempotent-replayed"] == "true"
    server.http.post(blocker["urls"]["cancel"])
