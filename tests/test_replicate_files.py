"""Replicate uploads (POST /v1/files) expire: the periodic clean-up deletes them untouched."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from fluxserve.api.deps import Services
from fluxserve.storage.blobs import BlobStore
from fluxserve.storage.uploads import sweep_expired
from tests.helpers import photo, png_bytes, wait_for

TTL = 60


def upload(http: TestClient, name: str) -> str:
    response = http.post("/v1/files", files={"content": (name, png_bytes(photo(16, 16)), "image/png")})
    assert response.status_code == 201, response.text
    file_id: str = response.json()["id"]
    return file_id


def stored(blobs: BlobStore, file_id: str) -> bool:
    return any(blobs.exists(f"uploads/{file_id}/{part}") for part in ("content", "meta.json"))


def test_the_clean_up_deletes_expired_uploads_nobody_asked_for(
    make_app: Callable[..., FastAPI], storage: dict[str, Any]
) -> None:
    now = [1_800_000_000.0]
    app = make_app(clock=lambda: now[0], replicate_file_ttl_seconds=TTL, **storage)
    with TestClient(app) as http:
        services: Services = app.state.services
        blobs = services.files.blobs
        old = upload(http, "old.png")
        now[0] += TTL / 2
        fresh = upload(http, "fresh.png")
        services.jobs.clean_up(now=now[0])  # neither has expired
        assert stored(blobs, old)
        assert stored(blobs, fresh)
        services.jobs.clean_up(now=now[0] + TTL / 2)  # the old one's last moment has come; no request touched it
        assert not stored(blobs, old)
        assert stored(blobs, fresh)
        assert http.get(f"/v1/files/{fresh}").status_code == 200
        assert http.get(f"/v1/files/{old}").status_code == 404
        assert blobs.folders("uploads/") == [fresh]


def test_the_sweep_leaves_what_is_not_a_finished_upload(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(clock=lambda: 1_800_000_000.0)
    with TestClient(app) as http:
        blobs = app.state.services.files.blobs
        kept = upload(http, "kept.png")
        half = "file_" + "h" * 24
        blobs.put(f"uploads/{half}/content", b"still being written", "image/png")  # no details yet
        blobs.put("uploads/not-an-upload/x", b"?", "text/plain")
        assert sweep_expired(blobs, now=1_800_000_000.0 + TTL * 1000) == 1
        assert not stored(blobs, kept)
        assert blobs.exists(f"uploads/{half}/content")
        assert blobs.exists("uploads/not-an-upload/x")


def test_the_periodic_clean_up_sweeps_uploads_on_its_own(make_app: Callable[..., FastAPI]) -> None:
    """The server's own clean-up thread (every cleanup_interval_seconds) removes an expired upload."""
    long_ago = time.time() - 10 * TTL  # uploads made "then" expired long before the thread's clock
    app = make_app(clock=lambda: long_ago, replicate_file_ttl_seconds=TTL, cleanup_interval_seconds=0.05)
    with TestClient(app) as http:
        blobs = app.state.services.files.blobs
        file_id = upload(http, "forgotten.png")
        wait_for(lambda: not stored(blobs, file_id), "the clean-up thread to delete the expired upload")
