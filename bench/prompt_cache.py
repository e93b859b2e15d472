"""Prompt-embedding cache: the same requests with the cache on and off, in one process.

Two workloads on the tiny klein model (256x256, 4 steps): one request for n=4 images with one
prompt, and 4 requests for one image each with the same prompt (seeds differ). Each runs on an
engine with the cache on (``prompt_cache_mb=256``) and one with it off (``0``), interleaved;
medians and the ratio on/off. The text encoder's share of the uncached time comes from timing
``encode_prompt`` alone: the goal is that the cache removes about that share (the encoder then
runs once instead of four times, so about three quarters of that share).

Run: scripts/bench prompt_cache
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from bench.common import interleaved_medians
from fluxserve.defaults import default_cache_dir
from fluxserve.engines.base import GenerationRequest
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.runtime import ModelRuntime

PROMPT = "a lighthouse on a cliff at dusk, waves breaking on the rocks below"
SIZE = 256


def engine(prompt_cache_mb: float) -> DiffusersEngine:
    options = EngineOptions(cache_dir=default_cache_dir(), allow_download=False)
    loaded = DiffusersEngine("tiny-random", replace(options, runtime=ModelRuntime(prompt_cache_mb=prompt_cache_mb)))
    loaded.load()
    return loaded


def encoder_seconds(pipeline: Any, rounds: int) -> float:
    """Median seconds of one ``encode_prompt`` (the text encoder and its tokenizer) for PROMPT."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        with torch.no_grad():
            pipeline.encode_prompt(prompt=PROMPT, device="cpu", num_images_per_prompt=1)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(rounds: int = 9) -> int:
    cached, uncached = engine(256), engine(0)
    print(f"tiny-random on {cached.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    fresh = iter(range(1_000_000))

    def one_request(on: DiffusersEngine) -> None:
        on.generate(GenerationRequest(f"{PROMPT} {next(fresh)}", width=SIZE, height=SIZE, seed=1, n=4))

    def four_requests(on: DiffusersEngine) -> None:
        prompt = f"{PROMPT} {next(fresh)}"
        for seed in range(4):
            on.generate(GenerationRequest(prompt, width=SIZE, height=SIZE, seed=seed))

    candidates: dict[str, Callable[[], object]] = {
        "n=4 cache on": lambda: one_request(cached),
        "n=4 cache off": lambda: one_request(uncached),
        "4 requests cache on": lambda: four_requests(cached),
        "4 requests cache off": lambda: four_requests(uncached),
    }
    for call in candidates.values():
        call()  # warm up every path
    medians = interleaved_medians(candidates, rounds)
    encode = encoder_seconds(uncached._pipeline, rounds)
    print(f"text encoder alone (encode_prompt): {encode * 1000:.1f} ms per prompt\n")
    print(f"{'workload':12} {'off ms':>9} {'on ms':>9} {'on/off':>7} {'encoder share of off':>21} {'saved':>7}")
    for workload in ("n=4", "4 requests"):
        off, on = medians[f"{workload} cache off"], medians[f"{workload} cache on"]
        share, saved = 4 * encode / off, 1 - on / off
        print(f"{workload:12} {off * 1000:9.1f} {on * 1000:9.1f} {on / off:7.3f} {share:21.1%} {saved:7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
