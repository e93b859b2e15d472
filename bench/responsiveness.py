"""Responsiveness: GET /health latency while 8 clients keep the server generating.

Eight concurrent clients send tiny-model generations (256x256, PNG, b64_json) back to back
against ``fluxserve serve`` on loopback; meanwhile one more client times ``GET /health``. The
baseline is the same /health timing on the idle server, measured in the same run. Goal: p99
under 50 ms while busy.

Run: scripts/bench responsiveness
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import httpx

from bench.common import fluxserve_server

CLIENTS = 8
PROBES = 400
BODY = {"prompt": "a lighthouse on a cliff at dusk", "size": "256x256"}


async def probe(client: httpx.AsyncClient, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get("/health")
        latencies.append(time.perf_counter() - started)
        response.raise_for_status()
        await asyncio.sleep(0.01)
    return latencies


async def keep_busy(client: httpx.AsyncClient, stop: asyncio.Event, done: list[int]) -> None:
    while not stop.is_set():
        response = await client.post("/v1/images/generations", json=BODY)
        response.raise_for_status()
        done[0] += 1


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(url: str) -> None:
    limits = httpx.Limits(max_connections=CLIENTS + 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await probe(client, 5)  # open the connection
        idle = await probe(client, PROBES // 2)
        stop, done = asyncio.Event(), [0]
        workers = [asyncio.create_task(keep_busy(client, stop, done)) for _ in range(CLIENTS)]
        await asyncio.sleep(2)  # let the queue fill
        started = time.perf_counter()
        busy = await probe(client, PROBES)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*workers)
    print(f"{'server':8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in (("idle", idle), ("busy", busy)):
        print(
            f"{name:8} {statistics.median(values) * 1000:8.2f} {percentile(values, 0.99) * 1000:8.2f} "
            f"{max(values) * 1000:8.2f}"
        )
    print(f"\n{done[0]} generations by {CLIENTS} clients during the run ({done[0] / elapsed:.1f}/s)")
    print(f"busy p99 / idle p99 = {percentile(busy, 0.99) / percentile(idle, 0.99):.1f}; goal: busy p99 under 50 ms")


def main() -> int:
    with fluxserve_server(["tiny-random"]) as url:
        asyncio.run(measure(url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
