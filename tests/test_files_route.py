"""The image-link route's streaming response: the stored image is closed however the response ends."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from fluxserve.api.routes.files import BlobResponse
from fluxserve.storage.blobs import CHUNK_BYTES, Blob
from tests.helpers import TEST_TIMEOUT

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "method": "GET", "path": "/", "headers": []}


def respond(blob: Blob, send: Any) -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never says it left: sending fails instead
        return {}

    asyncio.run(BlobResponse(blob, "image/png", {"content-length": str(blob.size)})(SCOPE, receive, send))


def test_a_streamed_image_is_sent_whole_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(bytes(range(256)) * (CHUNK_BYTES // 100))
    file = path.open("rb")
    body = bytearray()

    async def send(message: dict[str, Any]) -> None:
        body.extend(message.get("body", b""))

    respond(Blob(path.stat().st_size, file), send)
    assert bytes(body) == path.read_bytes()
    assert file.closed


class SlowFile:
    """A stored image whose second read waits (a slow disk or bucket) until the test lets it go."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("rb")
        self.reads = 0
        self.waiting, self.release = threading.Event(), threading.Event()

    def read(self, size: int = -1, /) -> bytes:
        self.reads += 1
        if self.reads == 2:
            self.waiting.set()
            self.release.wait(TEST_TIMEOUT)
        return self.file.read(size)

    def close(self) -> None:
        self.file.close()


def test_a_client_that_leaves_mid_image_leaves_no_open_file(tmp_path: Path) -> None:
    """The server sees the disconnect while a chunk is being read: the stream is canceled there."""
    path = tmp_path / "image.png"
    path.write_bytes(b"x" * CHUNK_BYTES * 3)
    reader = SlowFile(path)

    async def send(message: dict[str, Any]) -> None:
        pass

    async def receive() -> dict[str, Any]:
        await asyncio.to_thread(reader.waiting.wait, TEST_TIMEOUT)
        return {"type": "http.disconnect"}

    async def run() -> None:
        scope = {**SCOPE, "asgi": {"version": "3.0", "spec_version": "2.0"}}  # the server reports disconnects
        try:
            await BlobResponse(Blob(path.stat().st_size, reader), "image/png", {})(scope, receive, send)
        finally:
            reader.release.set()

    asyncio.run(run())
    assert reader.waiting.is_set()
    assert reader.file.closed


def test_a_failed_send_leaves_no_open_file(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(b"x" * CHUNK_BYTES * 3)
    file = path.open("rb")

    async def send(message: dict[str, Any]) -> None:
        if message.get("body"):
            raise OSError("the connection was reset")

    with pytest.raises(ClientDisconnect):
        respond(Blob(path.stat().st_size, file), send)
    assert file.closed
