"""Serving overhead: a generation through the HTTP API against the bare engine call.

The same tiny-model request (prompt, size, steps, seed) runs (a) as ``engine.generate`` in this
process and (b) as ``POST /v1/images/generations`` with ``b64_json`` PNG against ``fluxserve
serve`` on loopback, interleaved. (b) includes everything a client pays: parsing, the job
store, the queue, encoding, base64, JSON and the transfer. Goal: at most 5% and at most 30 ms
per output megapixel over the engine. A third column runs the bare engine on a worker thread,
as the server does, to separate what torch costs off the main thread from what fluxserve adds.

Run: scripts/bench serving_overhead
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.common import fluxserve_server, interleaved_medians
from fluxserve.defaults import default_cache_dir
from fluxserve.engines.base import GenerationRequest
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions

PROMPT = "a lighthouse on a cliff at dusk"
SIZES = (256, 1024)


def main(rounds: int = 15) -> int:
    engine = DiffusersEngine("tiny-random", EngineOptions(cache_dir=default_cache_dir(), allow_download=False))
    engine.load()
    print(f"{'size':10} {'engine ms':>10} {'in a thread':>12} {'HTTP ms':>9} {'ratio':>6} {'added ms/MP':>12}")
    thread = ThreadPoolExecutor(1)  # the server's worker runs the engine off the main thread
    with fluxserve_server(["tiny-random"]) as url, httpx.Client(base_url=url, timeout=120) as client:
        for size in SIZES:

            def bare(size: int = size) -> object:
                return engine.generate(GenerationRequest(PROMPT, width=size, height=size, seed=1))

            def served(size: int = size) -> object:
                body = {"prompt": PROMPT, "size": f"{size}x{size}", "seed": 1, "response_format": "b64_json"}
                response = client.post("/v1/images/generations", json=body)
                response.raise_for_status()
                return response.json()

            def threaded(size: int = size) -> object:
                return thread.submit(bare, size).result()

            bare(), threaded(), served()  # warm up every path
            medians = interleaved_medians({"engine": bare, "thread": threaded, "http": served}, rounds)
            added = medians["http"] - medians["engine"]
            megapixels = size * size / 1024**2
            ratio = medians["http"] / medians["engine"]
            print(
                f"{size}x{size:<6} {medians['engine'] * 1000:10.1f} {medians['thread'] * 1000:12.1f} "
                f"{medians['http'] * 1000:9.1f} "
                f"{ratio:6.3f} {added * 1000 / megapixels:12.1f}"
            )
    print("\ngoal: ratio at most 1.05 and at most 30 ms added per output megapixel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
