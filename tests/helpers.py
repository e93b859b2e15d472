"""Small helpers shared by the tests."""

from __future__ import annotations

import io
import os
import re
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

TEST_TIMEOUT = float(os.environ.get("FLUXSERVE_TEST_TIMEOUT", "60"))
"""The one limit every test derives its waits from; raise it on a slow or busy machine."""

MAX_WAIT = max(TEST_TIMEOUT, 60.0)
"""``max_wait_seconds`` of the test servers (60 by default): a ``Prefer: wait=TEST_TIMEOUT`` is honoured in full."""

PREFER_WAIT = {"Prefer": f"wait={int(TEST_TIMEOUT)}"}
"""The headers of a ``POST /v1/jobs`` that wants the finished job."""


def wait_for(condition: Callable[[], object], what: str = "the condition", *, timeout: float | None = None) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` s (TEST_TIMEOUT)."""
    limit = TEST_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {limit:g} s: {what}")
        time.sleep(0.02)


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")
"""The start of a text-format log line (fluxserve.telemetry.logs), as opposed to the CLI's own output."""


def without_log_lines(stderr: str) -> str:
    """What a command wrote to stderr besides its log lines (the server logs where it starts, say)."""
    return "\n".join(line for line in stderr.splitlines() if not LOG_LINE.match(line)).strip()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic test picture with smooth areas and detail, unlike flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / 37 + y / 53), np.cos(y / 29), np.sin((x + y) / 61)], axis=-1) * 100 + 128
    pixels = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def png_bomb(side: int) -> bytes:
    """A real PNG of side x side black pixels (1 bit each): a few hundred KB that inflate enormously."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


class ManualClock:
    """A clock the test moves: injected where the server times rate limits, quotas and URL expiry."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unsigned(view: dict[str, Any]) -> dict[str, Any]:
    """A job view with its image links' signatures cut off: two views of one job made at
    different times (or either side of an expiry boundary) sign its links differently."""
    images = [{**image, "url": image["url"].split("?")[0]} for image in view.get("images", [])]
    return {**view, "images": images} if "images" in view else view
