"""Replicas: jobs per second with one and with two worker processes sharing one Postgres queue, and
the claim latency (submit to ``started``) on SQLite and on Postgres.

Throughput: ``fluxserve serve`` processes on one Postgres database, each serving the tiny model
with one torch thread (``OMP_NUM_THREADS=1``), as two replicas on this 2-core machine would run.
A burst of jobs (``POST /v1/jobs``, 256x256, 4 steps) is posted round-robin to the processes, as a
load balancer in front of them would; every process's worker claims from the shared queue
(``FOR UPDATE SKIP LOCKED``), whichever process took the request. Jobs per second = jobs / (the
last job's ``finished_at`` - the first job's ``created_at``), read from the database. One and two
replicas alternate, round after round, each on a fresh database, so drift hits both alike.

Claim latency: one server, idle, gets one job at a time; the latency is the job's ``started_at`` -
``created_at`` in the store (the submit's transaction, the worker's wake-up and its claim), on
SQLite and on Postgres, interleaved. Percentiles over all jobs.

Goals: two replicas at least 1.8x the jobs/s of one; claim latency p50 under 20 ms on Postgres.

Run: scripts/bench replicas  (sizes: --jobs 64 --rounds 3 --claims 40; see --help)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tests.postgres_support import Cluster, running_cluster, stored_jobs

from bench.common import fluxserve_server

MODEL = "tiny-random"
JOB = {"model": MODEL, "prompt": "a lighthouse on a cliff at dusk", "size": "256x256", "steps": 4}
JOBS = 64
ROUNDS = 3
CLAIMS = 40
GOAL_SPEEDUP = 1.8
GOAL_CLAIM_MS = 20.0
SETTINGS = {"queue_poll_seconds": "0.05", "warmup": "true", "allow_download": "false"}
TIMEOUT = 600.0


@contextlib.contextmanager
def replicas(count: int, database_url: str | None) -> Iterator[list[str]]:
    """``count`` servers of the tiny model on one database, one torch thread each; their URLs."""
    settings = dict(SETTINGS)
    if database_url is not None:
        settings["database_url"] = database_url
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(fluxserve_server([MODEL], **settings)) for _ in range(count)]
        yield urls


def wait_all_finished(data_dir: Path, database_url: str | None, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        jobs = list(stored_jobs(data_dir, database_url, "id, status, created_at, started_at, finished_at").values())
        if len(jobs) == expected and all(job["finished_at"] is not None for job in jobs):
            failed = [job for job in jobs if job["status"] != "succeeded"]
            if failed:
                raise RuntimeError(f"{len(failed)} jobs did not succeed: {failed[:3]}")
            return jobs
        if time.monotonic() > deadline:
            raise RuntimeError("the jobs did not finish in time")
        time.sleep(0.2)


def burst(cluster: Cluster, count: int, jobs: int) -> float:
    """Jobs per second of ``count`` replicas draining a burst of ``jobs``."""
    url = cluster.create_database()
    with replicas(count, url) as urls, httpx.Client(timeout=60) as client:
        for number in range(jobs):
            response = client.post(f"{urls[number % len(urls)]}/v1/jobs", json=JOB)
            response.raise_for_status()
        done = wait_all_finished(Path(), url, jobs)
    first = min(job["created_at"] for job in done)
    last = max(job["finished_at"] for job in done)
    return float(jobs / (last - first))


def claim_latencies(database_url: str | None, data_dir: Path, claims: int) -> list[float]:
    """Milliseconds from a job's creation to its claim, one job at a time on an idle server."""
    settings = dict(SETTINGS)
    if database_url is not None:
        settings["database_url"] = database_url
    with fluxserve_server([MODEL], data_dir=data_dir, **settings) as url, httpx.Client(timeout=60) as client:
        for _ in range(claims):
            client.post(f"{url}/v1/jobs", json=JOB, headers={"Prefer": "wait=60"}).raise_for_status()
        jobs = wait_all_finished(data_dir, database_url, claims)
    return [(job["started_at"] - job["created_at"]) * 1000 for job in jobs]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=JOBS, help="jobs per burst")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="bursts with 1 and with 2 replicas each")
    parser.add_argument("--claims", type=int, default=CLAIMS, help="jobs per claim-latency run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"  # each server's torch on one thread, inherited by the servers
    rates: dict[int, list[float]] = {1: [], 2: []}
    latencies: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    with running_cluster() as cluster:
        for round_number in range(1, args.rounds + 1):
            for count in (1, 2):
                rates[count].append(burst(cluster, count, args.jobs))
            ratio = rates[2][-1] / rates[1][-1]
            print(
                f"round {round_number}: 1 replica {rates[1][-1]:.2f} jobs/s, 2 replicas {rates[2][-1]:.2f} jobs/s, "
                f"ratio {ratio:.2f}",
                flush=True,
            )
            with tempfile.TemporaryDirectory(prefix="fluxserve-bench-") as folder:
                latencies["sqlite"] += claim_latencies(None, Path(folder), args.claims)
            with tempfile.TemporaryDirectory(prefix="fluxserve-bench-") as folder:
                latencies["postgres"] += claim_latencies(cluster.create_database(), Path(folder), args.claims)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    speedup = two / one
    print(f"\njobs/s (median of {args.rounds} bursts of {args.jobs}): 1 replica {one:.2f}, 2 replicas {two:.2f}")
    print(f"speedup {speedup:.2f} (goal >= {GOAL_SPEEDUP}): {'met' if speedup >= GOAL_SPEEDUP else 'NOT met'}")
    print("\nclaim latency, submit to started (ms):")
    print("| store | p50 | p90 | max |")
    print("|---|---|---|---|")
    for store, values in latencies.items():
        print(f"| {store} | {percentile(values, 0.5):.1f} | {percentile(values, 0.9):.1f} | {max(values):.1f} |")
    p50 = percentile(latencies["postgres"], 0.5)
    print(f"Postgres p50 {p50:.1f} ms (goal < {GOAL_CLAIM_MS:g}): {'met' if p50 < GOAL_CLAIM_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
