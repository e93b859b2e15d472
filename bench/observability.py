"""Observability overhead: what metrics and JSON logs add to serving an image, and what scraping
``/metrics`` does to the latency of other requests.

1. The same tiny-model request (prompt, size, seed, ``b64_json`` PNG) against two ``fluxserve
   serve`` processes on loopback, interleaved: one with ``metrics = false`` and text logs (the
   baseline), one with metrics and ``log_format = "json"``. Goal: at most 2% more per 1 MP image.
2. What the instrumentation of one job costs, timed in this process without a server (machine
   noise cannot hide in it): the bus events' metrics, the step timings, the HTTP counter, and
   the JSON log lines a job writes.
3. The p50 and p99 of ``GET /health`` on the metrics server, in interleaved blocks with and
   without a thread scraping ``/metrics``: every 100 ms (150 times Prometheus' default of one
   scrape every 15 s), then back to back. Goal: p99 unchanged within noise at 100 ms.

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


def per_job_cost(jobs: int = 20_000) -> float:
    """Seconds of instrumentation per job of 4 steps: what metrics and JSON logs add to it."""
    import io
    import logging

    from fluxserve.engines.base import Progress
    from fluxserve.jobs.models import Job, JobEvent, JobEventType, JobSpec, JobStatus, Operation, Usage
    from fluxserve.jobs.observe import count_event
    from fluxserve.telemetry import context
    from fluxserve.telemetry.logs import JsonFormatter
    from fluxserve.telemetry.metrics import Metrics

    metrics = Metrics()
    spec = JobSpec("tiny-random", Operation.GENERATION, "p", 1024, 1024, 4, None, 1, 1, "png", None, "b64_json")
    started = Job("job_x", spec, JobStatus.RUNNING, 100.0, started_at=101.0)
    usage = Usage(0.0, 1.0, 4, 1)
    done = Job("job_x", spec, JobStatus.SUCCEEDED, 100.0, started_at=101.0, finished_at=102.0, usage=usage)
    events = [JobEvent("job_x", JobEventType.STARTED, job=started), JobEvent("job_x", JobEventType.COMPLETED, job=done)]
    logger = logging.getLogger("bench.observability")
    logger.propagate = False
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    progress = Progress(2, 4, 0, 1)
    begun = time.perf_counter()
    for _ in range(jobs):
        with context.job("job_x", "key_1"):
            for event in events:
                count_event(metrics, event)
            for _ in range(3):
                metrics.step("tiny-random", 0.01 * progress.step)
            metrics.http_request("POST", "/v1/images/generations", 200)
            logger.info("job %s queued for %s", "job_x", "tiny-random")
            logger.info("job %s %s after %.2f s", "job_x", "succeeded", 1.0)
    return (time.perf_counter() - begun) / jobs


def health_latency(client: httpx.Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.get("/health").raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def scraping(every: float) -> None:
    with fluxserve_server(["tiny-random"]) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.post("/v1/images/generations", json={"prompt": PROMPT, "size": "256x256"}).raise_for_status()
        samples: dict[str, list[float]] = {"no scrapes": [], "scraping": []}
        print(f"scraping {'back to back' if every == 0 else f'every {every * 1000:g} ms'}:")
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
                        stop.wait(every)

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
    print("goal: p99 of /health unchanged within noise while /metrics is scraped every 100 ms\n")


def main(rounds: int = 11) -> int:
    serving(rounds)
    cost = per_job_cost()
    print(f"instrumentation per job (in process): {cost * 1e6:.1f} us\n")
    scraping(every=0.1)
    scraping(every=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
