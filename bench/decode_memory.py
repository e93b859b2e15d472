"""Peak memory of the worst reference-image requests, before and after issue 13.

The review found that one 1 MB ``/v1/images/edits`` request, ten highly compressible 6000x6000 PNGs
(36 megapixels each, under the per-image limit), took the server from 1.3 GB to 2.6 GB before the
answer "at most 4 images". Now everything that can refuse a request from its fields and its images'
headers runs first, each reference is decoded straight to the size the model gets, and at most
``max_concurrent_decodes`` requests decode at once.

"after": a real ``fluxserve serve`` (tiny-random) gets each worst request from three clients at
once; the figure is how far its peak resident memory (VmHWM) rose over the peak after a warm-up.
"before": the same images decoded the way the server did before, every reference of a request in
full (``decode_image`` without a size) and held together, three requests at once, in a child
process measured the same way. The requests:

- ``ten``: ten 6000x6000 PNGs (the review's case; the model takes four);
- ``two``: two 6000x6000 PNGs, the second cut short: the first is decoded, then the request fails.

Run: scripts/bench decode_memory   (Linux: reads /proc)
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from tests.helpers import photo, png_bomb, png_bytes

CLIENTS = 3
"""Requests sent at once."""


def worst_requests() -> dict[str, list[bytes]]:
    bomb = png_bomb(6000)
    return {"ten": [bomb] * 10, "two": [bomb, bomb[: len(bomb) // 2]]}


def peak_kb(pid: int | str = "self") -> int:
    """The process's peak resident memory so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc: this needs Linux")


def at_once(call: Callable[[], object], count: int = CLIENTS) -> None:
    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def edit_body(images: list[bytes]) -> dict[str, object]:
    return {"prompt": "a", "size": "64x64", "images": [base64.b64encode(image).decode() for image in images]}


def server_rise_mb(url: str, pid: int, images: list[bytes], timeout: float) -> tuple[float, list[int]]:
    """How far the server's peak memory rose while ``CLIENTS`` clients sent ``images`` at once."""
    warm = httpx.post(f"{url}/v1/images/edits", json=edit_body([png_bytes(photo(64, 64))]), timeout=timeout)
    warm.raise_for_status()
    before = peak_kb(pid)
    statuses: list[int] = []

    def send() -> None:
        statuses.append(httpx.post(f"{url}/v1/images/edits", json=edit_body(images), timeout=timeout).status_code)

    at_once(send)
    return (peak_kb(pid) - before) / 1024, statuses


def _decode_all_the_old_way(name: str) -> None:
    """Child process: decode each request's references in full and hold them, as before; print the rise."""
    from fluxserve.errors import InvalidImage
    from fluxserve.imaging.decode import decode_image

    images = worst_requests()[name]
    before = peak_kb()

    def request() -> None:
        held = []
        try:
            for index, data in enumerate(images):
                held.append(decode_image(data, param=f"images[{index}]"))
        except InvalidImage:
            pass

    at_once(request)
    print((peak_kb() - before) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-way", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.old_way:
        _decode_all_the_old_way(args.old_way)
        return
    import subprocess

    from bench.common import fluxserve_server_process

    print(f"{'request':8} {'before MB':>10} {'after MB':>10} {'after/before':>13}  statuses")
    for name, images in worst_requests().items():
        child = subprocess.run(
            [sys.executable, "-m", "bench.decode_memory", "--old-way", name], capture_output=True, text=True, check=True
        )
        old = float(child.stdout.strip())
        with fluxserve_server_process(["tiny-random"]) as (url, pid):
            new, statuses = server_rise_mb(url, pid, images, timeout=300)
        print(f"{name:8} {old:10.0f} {new:10.0f} {new / max(old, 1):13.2f}  {sorted(statuses)}")


if __name__ == "__main__":
    main()
