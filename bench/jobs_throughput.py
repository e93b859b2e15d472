"""Jobs throughput: N concurrent clients submitting async jobs, against the bare engine's rate.

Each client submits a tiny-model job (``POST /v1/jobs``, 256x256, 4 steps, n=1, PNG) to
``fluxserve serve`` on loopback, reads the job's event stream (``GET /v1/jobs/{id}/events``)
until ``completed``, and submits the next, so N jobs are always in the server. Per job: the
time from submit to the ``completed`` event; per run: jobs per second on the wall clock.

The baseline is the engine's own sequential rate, measured in this process in the same run:
``engine.generate`` for the same request, then ``encode_result`` to PNG at the server's default
level, one after the other on the main thread. Everything else the server does (the HTTP
requests, the SQLite job record, the queue, the event stream, the image file) is what the
figures charge to it. Every load run sits between two baseline blocks, and is compared with
their mean, so drift hits both alike; the figures are medians over the rounds, and the ratio
of every run is printed too, to show the noise. The baseline never runs on a second thread:
once torch has computed on two threads of one process, every later call is slower on a small
CPU (80 ms became 130 ms here), and the server, too, calls its engine from one thread only.

The clients run in this process, on the same cores as the server: their CPU time per job is
printed, as it slows the server's generation about as much as the server's own work does.

Goals: at least 0.95 of the engine's rate, and under 10 ms added per job, where
overhead per job = (wall time of the load run - jobs x baseline seconds per job) / jobs.

Run: scripts/bench jobs_throughput  (sizes: --clients 1,4,16 --jobs 24 --rounds 6; see --help)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import fluxserve_server
from fluxserve.defaults import default_cache_dir
from fluxserve.engines.base import GenerationRequest
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.outputs import encode_result
from fluxserve.imaging.encode import ImageFormat

PROMPT = "a lighthouse on a cliff at dusk"
SIZE = 256
STEPS = 4
CLIENTS = (1, 4, 16)
JOBS = 24
"""Jobs per load run, shared among the clients."""
BASELINE_JOBS = 12
"""Sequential engine calls per baseline block."""
ROUNDS = 6
GOAL_RATIO = 0.95
GOAL_OVERHEAD_MS = 10.0
TERMINAL = ("completed", "failed", "canceled")


@dataclass
class Figures:
    """What the rounds measured for one number of clients."""

    rates: list[float] = field(default_factory=list)
    """Jobs per second of each load run."""
    engine_rates: list[float] = field(default_factory=list)
    """The engine's jobs per second around each load run (the mean of the blocks before and after)."""
    overheads: list[float] = field(default_factory=list)
    """Seconds added per job in each load run."""
    client_cpu: list[float] = field(default_factory=list)
    """CPU seconds per job this process spent as the clients (it shares the cores with the server)."""
    latencies: list[float] = field(default_factory=list)
    submits: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [rate / engine for rate, engine in zip(self.rates, self.engine_rates, strict=True)]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def baseline_block(engine: DiffusersEngine, jobs: int, size: int) -> float:
    """Seconds per job for the engine alone: generate, then encode as the server does."""
    started = time.perf_counter()
    for seed in range(jobs):
        result = engine.generate(GenerationRequest(PROMPT, width=size, height=size, steps=STEPS, seed=seed))
        encode_result(result, ImageFormat.PNG)
    return (time.perf_counter() - started) / jobs


async def terminal_event(client: httpx.AsyncClient, url: str) -> tuple[str, dict[str, Any]]:
    """Read a job's Server-Sent Events until the final one; return its name and data."""
    name, data = "", []
    async with client.stream("GET", url, headers={"accept": "text/event-stream"}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line:
                key, _, value = line.partition(":")
                if key == "event":
                    name = value.strip()
                elif key == "data":
                    data.append(value.removeprefix(" "))
                continue
            if name in TERMINAL:
                return name, json.loads("\n".join(data))
            name, data = "", []
    raise RuntimeError(f"{url}: the stream ended without a final event")


async def one_job(
    client: httpx.AsyncClient, size: int, seed: int, latencies: list[float], submits: list[float]
) -> None:
    body = {"prompt": PROMPT, "size": f"{size}x{size}", "steps": STEPS, "n": 1, "seed": seed}
    started = time.perf_counter()
    response = await client.post("/v1/jobs", json=body)
    submits.append(time.perf_counter() - started)
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs answered {response.status_code}: {response.text[:300]}")
    name, job = await terminal_event(client, response.json()["urls"]["events"])
    latencies.append(time.perf_counter() - started)
    if name != "completed" or job.get("status") != "succeeded":
        raise RuntimeError(f"job {job.get('id')} ended {name}: {job.get('error')}")


async def load_run(
    url: str, clients: int, jobs: int, size: int, timeout: float
) -> tuple[float, list[float], list[float]]:
    """``jobs`` jobs by ``clients`` concurrent clients; wall seconds, submit-to-completed and POST times."""
    latencies: list[float] = []
    submits: list[float] = []
    seeds = iter(range(jobs))
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await one_job(client, size, 0, [], [])  # open a connection; the server's caches are warm after this

        async def client_loop() -> None:
            for seed in seeds:  # the clients share one iterator: exactly ``jobs`` jobs in all
                await one_job(client, size, seed, latencies, submits)

        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(client_loop() for _ in range(clients)))
        wall = time.perf_counter() - started
    return wall, latencies, submits


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="comma-separated client counts")
    parser.add_argument("--jobs", type=int, default=JOBS, help="jobs per load run")
    parser.add_argument("--baseline-jobs", type=int, default=BASELINE_JOBS, help="engine calls per baseline block")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--size", type=int, default=SIZE, help="image side in pixels (a multiple of 16)")
    args = parser.parse_args(argv)
    args.clients = [int(n) for n in args.clients.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    engine = DiffusersEngine("tiny-random", EngineOptions(cache_dir=default_cache_dir(), allow_download=False))
    engine.load()
    figures = {n: Figures() for n in args.clients}
    queue = str(max(args.jobs, max(args.clients)) + 8)
    with fluxserve_server(["tiny-random"], max_queue=queue) as url:
        baseline_block(engine, args.baseline_jobs, args.size)  # warm the engine up
        before = baseline_block(engine, args.baseline_jobs, args.size)
        for _ in range(args.rounds):
            for n in args.clients:
                limit = 60 + args.jobs * before * 20  # bounded: a stuck server fails the run, never hangs it
                cpu = time.process_time()
                wall, latencies, submits = asyncio.run(load_run(url, n, args.jobs, args.size, limit))
                cpu = time.process_time() - cpu
                after = baseline_block(engine, args.baseline_jobs, args.size)
                per_job = (before + after) / 2
                got = figures[n]
                got.rates.append(args.jobs / wall)
                got.engine_rates.append(1 / per_job)
                got.overheads.append(wall / args.jobs - per_job)
                got.client_cpu.append(cpu / (args.jobs + 1))  # + the job that opens the connection
                got.latencies += latencies
                got.submits += submits
                before = after
    report(figures, args.jobs, args.size)
    return 0


def report(figures: dict[int, Figures], jobs: int, size: int) -> None:
    median = statistics.median
    engine_rates = [rate for got in figures.values() for rate in got.engine_rates]
    print(
        f"baseline: engine.generate + PNG encode, {size}x{size}, {STEPS} steps, n=1, one after another: "
        f"median {1000 / median(engine_rates):.1f} ms/job ({median(engine_rates):.2f} jobs/s), "
        f"{1000 / max(engine_rates):.1f} to {1000 / min(engine_rates):.1f} ms/job around single load runs"
    )
    print(f"medians over {len(engine_rates) // len(figures)} load runs of {jobs} jobs each; p50/p99 over all jobs")
    print(
        f"\n{'N':>3} {'jobs':>5} {'jobs/s':>7} {'engine/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'POST p50':>9} {'overhead ms/job':>16} {'client CPU':>11}  ratio of each run"
    )
    met = True
    for n, got in figures.items():
        ratio, overhead = median(got.ratios), median(got.overheads) * 1000
        met = met and ratio >= GOAL_RATIO and overhead < GOAL_OVERHEAD_MS
        print(
            f"{n:>3} {len(got.latencies):>5} {median(got.rates):7.2f} {median(got.engine_rates):9.2f} {ratio:6.3f} "
            f"{median(got.latencies) * 1000:8.1f} {percentile(got.latencies, 0.99) * 1000:8.1f} "
            f"{median(got.submits) * 1000:9.1f} {overhead:16.1f} {median(got.client_cpu) * 1000:11.1f}  "
            + " ".join(f"{r:.2f}" for r in got.ratios)
        )
    print(
        f"\ngoal: at least {GOAL_RATIO} of the engine's rate and under {GOAL_OVERHEAD_MS:g} ms added per job: "
        + ("met" if met else "NOT met")
    )
    print("p50/p99: from POST /v1/jobs to the completed event, queueing behind the other clients' jobs included")
    print("client CPU: ms per job this process spent as the clients, on the same cores as the server")


if __name__ == "__main__":
    sys.exit(main())
