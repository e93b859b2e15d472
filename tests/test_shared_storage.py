"""Images in an S3 bucket, end to end: servers that share a bucket serve each other's images.

Real servers on loopback generate on the tiny models and keep their images in a real
S3-compatible server (moto's, tests/object_store.py). The job store is the data directory's
SQLite file, shared here by servers on one machine; the images are nowhere but in the bucket.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fluxserve.cli.main import main
from fluxserve.errors import StorageUnavailable
from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, photo, png_bytes, without_log_lines
from tests.jobs_support import QUICK, LiveServer, sse_lines
from tests.object_store import MotoS3
from tests.servers import ServerProcess

PREFIX = "fluxserve"


@pytest.fixture
def own_s3() -> Iterator[MotoS3]:
    """An S3 server of this test's own, to take down and bring back."""
    server = MotoS3()
    yield server
    server.stop()


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=TEST_TIMEOUT)


def finished_job(server: LiveServer) -> dict[str, Any]:
    job = server.submit({**QUICK, "seed": 5}, headers=PREFER_WAIT)
    assert job["status"] == "succeeded", job
    return job


def test_a_job_in_the_bucket_is_served_by_another_server_and_deleted_with_the_job(
    make_server: Callable[..., LiveServer], s3: MotoS3, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    first = make_server(**s3.settings(bucket, PREFIX))
    job = finished_job(first)
    key = f"{PREFIX}/outputs/{job['id']}/0.png"
    assert s3.keys(bucket) == [key]
    stored = s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert not (tmp_path / "data" / "outputs").exists()  # nothing on this machine's disk

    image = get(job["images"][0]["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.headers["content-length"] == str(len(stored))
    assert image.content == stored

    second = make_server(**s3.settings(bucket, PREFIX))  # another server, the same bucket and job store
    link = job["images"][0]["url"].replace(first.url, second.url)
    assert get(link).content == stored

    assert second.http.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert s3.keys(bucket) == []
    assert get(link).status_code == 404
    assert get(job["images"][0]["url"]).status_code == 404


def test_references_of_a_job_go_to_the_bucket_and_with_the_job(
    make_server: Callable[..., LiveServer], s3: MotoS3
) -> None:
    bucket = s3.new_bucket()
    server = make_server(**s3.settings(bucket))
    files = [("input_image_0", ("a.png", png_bytes(photo(64, 64, 1)), "image/png"))]
    data = {"model": "tiny-random", "prompt": "the cat", "size": "64x64"}
    response = server.http.post("/v1/images/generations", data=data, files=files)
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    assert s3.keys(bucket) == [f"outputs/{job_id}/0.png", f"references/{job_id}/0.png"]
    assert server.http.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert s3.keys(bucket) == []


def test_a_streamed_image_comes_from_the_bucket(make_server: Callable[..., LiveServer], s3: MotoS3) -> None:
    bucket = s3.new_bucket()
    server = make_server(**s3.settings(bucket))
    response = server.http.post("/v1/images/generations", json={**QUICK, "stream": True})
    assert response.status_code == 200, response.text
    kind, event = sse_lines(response)[-1]
    assert kind == "image_generation.completed"
    stored = s3.client.get_object(Bucket=bucket, Key=f"outputs/{event['id']}/0.png")["Body"].read()
    assert base64.b64decode(event["b64_json"]) == stored


def test_while_the_bucket_is_down_requests_get_503_and_work_again_when_it_is_back(
    make_server: Callable[..., LiveServer], own_s3: MotoS3
) -> None:
    bucket = own_s3.new_bucket()
    server = make_server(**own_s3.settings(bucket), object_store_timeout_seconds=2)
    job = finished_job(server)
    link = job["images"][0]["url"]
    own_s3.stop()

    image = get(link)
    assert image.status_code == 503
    error = image.json()["error"]
    assert (error["code"], error["type"]) == ("storage_unavailable", "service_unavailable")
    assert "cannot be reached" in error["message"]
    assert image.headers["retry-after"] == "5"
    assert server.http.get(f"/v1/jobs/{job['id']}").status_code == 200  # the record does not need the bucket

    generated = server.http.post("/v1/images/generations", json={**QUICK, "response_format": "url"})
    assert generated.status_code == 503  # made, but it could not be saved
    assert generated.json()["error"]["code"] == "storage_unavailable"
    files = [("input_image_0", ("a.png", png_bytes(photo(64, 64, 1)), "image/png"))]
    edit = server.http.post("/v1/images/edits", data={"model": "tiny-random", "prompt": "x"}, files=files)
    assert edit.status_code == 503  # its image could not be kept: no job was made
    assert edit.json()["error"]["code"] == "storage_unavailable"
    deleted = server.http.delete(f"/v1/jobs/{job['id']}")
    assert deleted.status_code == 503
    assert server.http.get(f"/v1/jobs/{job['id']}").status_code == 200  # kept, to be deleted again later

    own_s3.start()
    assert get(link).status_code == 200  # no restart needed
    assert server.http.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert own_s3.keys(bucket, "outputs/") == []


def test_a_server_does_not_start_on_a_bucket_that_is_missing_or_down(
    make_app: Callable[..., FastAPI], s3: MotoS3, own_s3: MotoS3
) -> None:
    with pytest.raises(StorageUnavailable, match=r"'not-made-yet' does not exist; create it"):
        make_app(**s3.settings("not-made-yet"))
    settings = own_s3.settings(own_s3.new_bucket())
    own_s3.stop()
    with pytest.raises(StorageUnavailable, match=rf"cannot be reached .*at {own_s3.endpoint_url}"):
        make_app(**settings, object_store_timeout_seconds=1)


def test_serve_on_a_missing_bucket_exits_with_one_line(
    s3: MotoS3, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in s3.settings("not-made-either", PREFIX).items():
        monkeypatch.setenv(f"FLUXSERVE_{name.upper()}", value)
    monkeypatch.setenv("FLUXSERVE_CACHE_DIR", str(cache_dir))
    assert main(["serve", "--model", "tiny-random", "--data-dir", str(tmp_path / "data"), "--port", "0"]) == 1
    error = without_log_lines(capsys.readouterr().err)
    assert error.startswith("fluxserve: error: image storage is unavailable: the bucket 'not-made-either'")
    assert f"object_store_url s3://not-made-either, at {s3.endpoint_url}" in error
    assert len(error.splitlines()) == 1


@pytest.mark.slow
def test_a_second_server_process_configured_from_the_environment_serves_the_image(
    make_server: Callable[..., LiveServer], s3: MotoS3, tmp_path: Path, cache_dir: Path
) -> None:
    bucket = s3.new_bucket()
    settings = s3.settings(bucket, PREFIX)
    first = make_server(**settings)
    job = finished_job(first)
    stored = s3.client.get_object(Bucket=bucket, Key=f"{PREFIX}/outputs/{job['id']}/0.png")["Body"].read()

    env = {f"FLUXSERVE_{name.upper()}": value for name, value in settings.items()}
    other = ServerProcess(tmp_path / "data", cache_dir, ["tiny-random-base"], extra_env=env)
    try:
        other.wait_ready()
        image = get(job["images"][0]["url"].replace(first.url, other.url))
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content == stored
        assert httpx.delete(f"{other.url}/v1/jobs/{job['id']}", timeout=TEST_TIMEOUT).status_code == 204
    finally:
        other.stop()
    assert s3.keys(bucket) == []
    assert get(job["images"][0]["url"]).status_code == 404
