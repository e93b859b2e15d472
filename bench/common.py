"""Helpers shared by the benchmarks: timing that interleaves candidates, and test pictures."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageFilter


def interleaved_medians(candidates: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call for each candidate, running them in turn so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, call in candidates.items():
            started = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) for name, times in samples.items()}


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth shapes, soft texture and sensor-like grain: compresses like a real photo, not like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([np.sin(x * 7 + y * 3), np.cos(y * 5 - x), np.sin((x - y) * 4)], axis=-1) * 90 + 128
    texture = Image.fromarray((rng.random((height // 16, width // 16, 3)) * 255).astype(np.uint8))
    texture = texture.resize((width, height), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    pixels = base + (np.asarray(texture, dtype=float) - 128) * 0.3 + rng.normal(0, 3, base.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """What the tiny random-weight models draw: the worst case for every codec."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


@contextmanager
def fluxserve_server(models: list[str], data_dir: Path | None = None, **settings: str) -> Iterator[str]:
    """``fluxserve serve`` in a child process on a free loopback port, ready; yields its URL.

    ``data_dir``: the server's data (a temporary folder by default); ``settings`` go in as
    ``FLUXSERVE_*`` variables.
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fluxserve-bench-")))
        url, _ = stack.enter_context(_serve(models, data_dir, settings))
        yield url


@contextmanager
def fluxserve_server_process(models: list[str], **settings: str) -> Iterator[tuple[str, int]]:
    """Like :func:`fluxserve_server`, in a temporary data dir; yields the URL and the process id."""
    with (
        tempfile.TemporaryDirectory(prefix="fluxserve-bench-") as data_dir,
        _serve(models, Path(data_dir), settings) as served,
    ):
        yield served


@contextmanager
def _serve(models: list[str], data_dir: Path, settings: dict[str, str]) -> Iterator[tuple[str, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "fluxserve", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    for model in models:
        command += ["--model", model]
    env = {**os.environ, **{f"FLUXSERVE_{key.upper()}": value for key, value in settings.items()}}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fluxserve server did not become ready")
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)
