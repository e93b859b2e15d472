"""Observability overhead: what metrics and JSON logs add to serving an image, and what scraping
``/metrics`` does to the latency of other requests.

1. The same tiny-model request (prompt, size, seed, ``b64_json`` PNG) against two ``fluxserve
   serve`` processes on loopback, interleaved: one with ``metrics = false`` and text logs (the
   baseline), one with metrics and ``log_format = "json"``. Goal: at most 2% more per 1 MP image.
2. The p50 and p99 of ``GET /health`` on the metrics server, in interleaved blocks with and
   without a thread scraping ``/metrics`` back to back (far harder than Prometheus' one scrape
   every 15 s). Goal: p99 unchanged within noise.

Run: scripts/bench observability
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import httpx

from bench.common import fluxserve_server, interleaved_medians

PROMPT = "a lighthouse on a cliff at dusk"
SIZES = (256, 1024)
BLOCKS, PER_BLOCK = 10, 200


def serving(rounds: int) -> None:
    print(f"{'size':10} {'off ms':>9} {'on ms':>9} {'ratio':>7}")
    with (
        fluxserve_server(["tiny-random"], metrics="false", log_format="text") as off_url,
        fluxserve_server(["tiny-random"], metrics="true", log_format="json") as on_url,
        httpx.Client(base_url=off_url, timeout=120) as off,
        httpx.Client(base_url=on_url, timeout=120) as on,
    ):
        assert off.get("/metrics").status_code == 404
        assert on.get("/metrics").status_code == 200
        for size in SIZES:
            body = {"prompt": PROMPT, "size": f"{size}x{size}", "seed": 1, "response_format": "b64_json"}

            def generate(client: httpx.Client, body: dict[str, object] = body) -> object:
                response = client.post("/v1/images/generations", json=body)
                response.raise_for_status()
                return response.json()

            candidates = {"off": lambda: generate(off), "on": lambda: generate(on)}
            for call in candidates.values():
                call()  # warm up
            medians = interleaved_medians(candidates, rounds)
            print(
                f"{size}x{size:<6} {medians['off'] * 1000:9.1f} {medians['on'] * 1000:9.1f} "
                f"{medians['on'] / medians['off']:7.3f}"
            )
    print("goal: ratio at most 1.02 at 1024x1024 (1 MP)\n")


def health_latency(client: httpx.Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.get("/health").raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def scraping() -> None:
    with fluxserve_server(["tiny-random"]) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.post("/v1/images/generations", json={"prompt": PROMPT, "size": "256x256"}).raise_for_status()
        samples: dict[str, list[float]] = {"no scrapes": [], "scraping": []}
        scrapes: list[float] = []
        for _ in range(BLOCKS):
            samples["no scrapes"] += health_latency(client, PER_BLOCK)
            stop = threading.Event()

            def scrape(stop: threading.Event = stop) -> None:
                with httpx.Client(base_url=url, timeout=30) as scraper:
                    while not stop.is_set():
                        started = time.perf_counter()
                        scraper.get("/metrics").raise_for_status()
                        scrapes.append(time.perf_counter() - started)

            thread = threading.Thread(target=scrape)
            thread.start()
            samples["scraping"] += health_latency(client, PER_BLOCK)
            stop.set()
            thread.join()
    print(f"{'/health':12} {'p50 ms':>8} {'p99 ms':>8}")
    for name, times in samples.items():
        cuts = statistics.quantiles(times, n=100)
        print(f"{name:12} {cuts[49] * 1000:8.2f} {cuts[98] * 1000:8.2f}")
    print(f"one scrape of /metrics: median {statistics.median(scrapes) * 1000:.2f} ms over {len(scrapes)} scrapes")
    print("goal: p99 of /health unchanged within noise while /metrics is scraped")


def main(rounds: int = 11) -> int:
    serving(rounds)
    scraping()
    return 0


if __name__ == "__main__":
    sys.exit(main())
