"""Auth overhead: what checking an API key adds to a cheap request, against an open server.

Two ``fluxserve serve`` processes run side by side on loopback with the tiny-random model: (a)
"open", whose data dir has no key, so it serves this machine without authentication (the
baseline), and (b) "keyed", whose data dir has one generate key, created before it starts;
its requests send ``Authorization: Bearer fsk_...``. The same cheap authenticated requests
(``GET /v1/models`` and ``GET /v1/jobs?limit=1``, both servers with no jobs) are timed on both
in interleaved rounds, the order of the two flipped every round, so drift hits both alike.

With one client: a keep-alive ``httpx.Client``, requests one after another, each one timed.
With N > 1 clients: N tasks on one keep-alive ``httpx.AsyncClient`` with N connections, each
sending its requests one after another, so N requests are always in the server; each request
is timed, and the round's requests per second are reported too.

Both servers pay for the auth dependency (``caller``) on every request: the open one hands
``anonymous_allowed`` to a thread, which asks SQLite whether any key exists (the answer is
cached only once it is yes); the keyed one hands ``anonymous_allowed`` to a thread (cached, no
query) and then ``KeyStore.authenticate`` to another (SQLite lookup by prefix, SHA-256,
``hmac.compare_digest``). What the figures call "added" is the keyed server's median minus
the open one's; the median of the rounds' own differences, with their range, shows the noise.
A last section times those pieces in this process, to say where the added time goes.

No goal: this reports the cost.

Run: scripts/bench auth_overhead  (sizes: --rounds 20 --requests 50 --clients 1,4; see --help)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import fluxserve_server
from fluxserve.accounts.keys import hash_key
from fluxserve.accounts.keystore import KeyStore
from fluxserve.accounts.policy import anonymous_allowed
from fluxserve.db import SqliteDatabase
from fluxserve.settings import Settings

MODEL = "tiny-random"
ENDPOINTS = {"models": "/v1/models", "jobs": "/v1/jobs?limit=1"}
MODES = ("open", "keyed")
ROUNDS = 20
REQUESTS = 50
"""Requests per client, per endpoint, per mode, per round."""
CLIENTS = (1, 4)
WARMUP = 50


def create_key(data_dir: Path) -> str:
    store = SqliteDatabase(data_dir / "jobs.sqlite3")
    try:
        _, secret = KeyStore(store).create("bench")
    finally:
        store.close()
    return secret


def check_modes(urls: dict[str, str], headers: dict[str, dict[str, str]]) -> None:
    """Each server is what its mode says: open serves no key; keyed refuses no key and serves the key."""
    for name, path in ENDPOINTS.items():
        open_ok = httpx.get(urls["open"] + path, timeout=10).status_code
        keyed_without = httpx.get(urls["keyed"] + path, timeout=10).status_code
        keyed_with = httpx.get(urls["keyed"] + path, headers=headers["keyed"], timeout=10).status_code
        if (open_ok, keyed_without, keyed_with) != (200, 401, 200):
            raise RuntimeError(
                f"{name}: open without a key {open_ok}, keyed without {keyed_without}, keyed with {keyed_with}; "
                "expected 200, 401, 200"
            )


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    """Seconds per request, over every round."""
    round_medians: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    """Requests per second of each round (all clients together)."""


def timed_sequential(client: httpx.Client, path: str, count: int) -> tuple[list[float], float]:
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        before = time.perf_counter()
        response = client.get(path)
        latencies.append(time.perf_counter() - before)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
    return latencies, time.perf_counter() - started


async def timed_concurrent(client: httpx.AsyncClient, path: str, clients: int, count: int) -> tuple[list[float], float]:
    async def one_client() -> list[float]:
        latencies = []
        for _ in range(count):
            before = time.perf_counter()
            response = await client.get(path)
            latencies.append(time.perf_counter() - before)
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
        return latencies

    started = time.perf_counter()
    results = await asyncio.gather(*(one_client() for _ in range(clients)))
    return [latency for latencies in results for latency in latencies], time.perf_counter() - started


def measure_one_client(
    urls: dict[str, str], headers: dict[str, dict[str, str]], rounds: int, requests: int
) -> dict[tuple[str, str], Samples]:
    samples = {(mode, name): Samples() for mode in MODES for name in ENDPOINTS}
    clients = {mode: httpx.Client(base_url=urls[mode], headers=headers[mode], timeout=30) for mode in MODES}
    try:
        for mode in MODES:
            for path in ENDPOINTS.values():
                timed_sequential(clients[mode], path, WARMUP)
        for index in range(rounds):
            for mode in MODES if index % 2 == 0 else MODES[::-1]:
                for name, path in ENDPOINTS.items():
                    latencies, wall = timed_sequential(clients[mode], path, requests)
                    got = samples[mode, name]
                    got.latencies += latencies
                    got.round_medians.append(statistics.median(latencies))
                    got.rates.append(requests / wall)
    finally:
        for client in clients.values():
            client.close()
    return samples


async def measure_concurrent(
    urls: dict[str, str], headers: dict[str, dict[str, str]], n: int, rounds: int, requests: int
) -> dict[tuple[str, str], Samples]:
    samples = {(mode, name): Samples() for mode in MODES for name in ENDPOINTS}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    clients = {
        mode: httpx.AsyncClient(base_url=urls[mode], headers=headers[mode], timeout=30, limits=limits) for mode in MODES
    }
    try:
        for mode in MODES:
            for path in ENDPOINTS.values():
                await timed_concurrent(clients[mode], path, n, WARMUP // n + 1)  # opens all n connections
        for index in range(rounds):
            for mode in MODES if index % 2 == 0 else MODES[::-1]:
                for name, path in ENDPOINTS.items():
                    latencies, wall = await timed_concurrent(clients[mode], path, n, requests)
                    got = samples[mode, name]
                    got.latencies += latencies
                    got.round_medians.append(statistics.median(latencies))
                    got.rates.append(n * requests / wall)
    finally:
        for client in clients.values():
            await client.aclose()
    return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(n: int, samples: dict[tuple[str, str], Samples], rounds: int, requests: int) -> None:
    median = statistics.median
    per_mode = n * requests * rounds
    print(
        f"\n{n} client{'s' if n > 1 else ''} ({'httpx.Client' if n == 1 else 'httpx.AsyncClient'}, keep-alive): "
        f"{per_mode} requests per endpoint and mode, {rounds} rounds"
    )
    print(
        f"{'endpoint':9} {'mode':6} {'p50 us':>8} {'p99 us':>8} {'req/s':>7}   "
        f"{'ratio p50':>9} {'added p50 us':>12} {'added p99 us':>12}  rounds' added p50 (median, min..max)"
    )
    for name in ENDPOINTS:
        base, keyed = samples["open", name], samples["keyed", name]
        for mode in MODES:
            got = samples[mode, name]
            line = (
                f"{name:9} {mode:6} {median(got.latencies) * 1e6:8.0f} {percentile(got.latencies, 0.99) * 1e6:8.0f} "
                f"{median(got.rates):7.0f}"
            )
            if mode == "keyed":
                diffs = [k - o for k, o in zip(keyed.round_medians, base.round_medians, strict=True)]
                line += (
                    f"   {median(keyed.latencies) / median(base.latencies):9.3f} "
                    f"{(median(keyed.latencies) - median(base.latencies)) * 1e6:12.0f} "
                    f"{(percentile(keyed.latencies, 0.99) - percentile(base.latencies, 0.99)) * 1e6:12.0f}  "
                    f"{median(diffs) * 1e6:.0f} ({min(diffs) * 1e6:.0f}..{max(diffs) * 1e6:.0f})"
                )
            print(line)


def per_call(call: Callable[[], object], count: int) -> float:
    """Median seconds per call over blocks of ``count`` // 10 calls."""
    block = max(1, count // 10)
    times = []
    for _ in range(10):
        started = time.perf_counter()
        for _ in range(block):
            call()
        times.append((time.perf_counter() - started) / block)
    return statistics.median(times)


def pieces(count: int) -> None:
    """The auth dependency's pieces, timed in this process (not the server's), to say where time goes."""
    with (
        tempfile.TemporaryDirectory(prefix="fluxserve-bench-") as empty_dir,
        tempfile.TemporaryDirectory(prefix="fluxserve-bench-") as keyed_dir,
    ):
        empty_store, keyed_store = (
            SqliteDatabase(Path(empty_dir) / "jobs.sqlite3"),
            SqliteDatabase(Path(keyed_dir) / "jobs.sqlite3"),
        )
        try:
            empty_keys, keyed_keys = KeyStore(empty_store), KeyStore(keyed_store)
            _, secret = keyed_keys.create("bench")
            settings = Settings.model_validate({})  # loopback, no --no-auth
            keyed_keys.any()  # caches True, as on the keyed server after its first request
            rows = {
                "anonymous_allowed, no key (SQLite SELECT every call)": lambda: anonymous_allowed(settings, empty_keys),
                "anonymous_allowed, a key exists (cached)": lambda: anonymous_allowed(settings, keyed_keys),
                "KeyStore.authenticate (SELECT by prefix, SHA-256, compare)": lambda: keyed_keys.authenticate(secret),
                "  of which hash_key (SHA-256)": lambda: hash_key(secret),
            }
            timed = {label: per_call(call, count) for label, call in rows.items()}

            async def hops() -> float:
                async def one() -> None:
                    await asyncio.to_thread(int)

                for _ in range(100):
                    await one()
                times = []
                for _ in range(10):
                    started = time.perf_counter()
                    for _ in range(count // 10):
                        await one()
                    times.append((time.perf_counter() - started) / (count // 10))
                return statistics.median(times)

            timed["asyncio.to_thread round trip of a no-op"] = asyncio.run(hops())
        finally:
            empty_store.close()
            keyed_store.close()
    print(f"\nthe pieces, in this process (median us per call, {count} calls each):")
    for label, seconds in timed.items():
        print(f"  {label:60} {seconds * 1e6:7.1f}")
    print(
        "  per request, one thread hop each: open = anonymous_allowed with its SELECT; keyed = cached "
        "anonymous_allowed + authenticate"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--requests", type=int, default=REQUESTS, help="requests per client, endpoint, mode and round")
    parser.add_argument("--pieces", type=int, default=20000, help="calls per piece timed in-process (0: skip)")
    args = parser.parse_args(argv)
    args.clients = [int(n) for n in args.clients.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="fluxserve-bench-") as open_dir,
        tempfile.TemporaryDirectory(prefix="fluxserve-bench-") as keyed_dir,
    ):
        secret = create_key(Path(keyed_dir))
        headers = {"open": {}, "keyed": {"Authorization": f"Bearer {secret}"}}
        with (
            fluxserve_server([MODEL], Path(open_dir), allow_download="false") as open_url,
            fluxserve_server([MODEL], Path(keyed_dir), allow_download="false") as keyed_url,
        ):
            urls = {"open": open_url, "keyed": keyed_url}
            check_modes(urls, headers)
            for n in args.clients:
                if n == 1:
                    samples = measure_one_client(urls, headers, args.rounds, args.requests)
                else:
                    samples = asyncio.run(measure_concurrent(urls, headers, n, args.rounds, args.requests))
                report(n, samples, args.rounds, args.requests)
    if args.pieces:
        pieces(args.pieces)
    print("\nadded = keyed - open; ratio = keyed p50 / open p50. No goal: this reports the cost.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
