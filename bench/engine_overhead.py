"""Engine overhead: fluxserve's engine against the bare diffusers pipeline call.

Both run the same tiny pipeline object with identical arguments (prompt, size, steps, seed,
guidance); fluxserve adds validation, its step callback (progress and cancel checks) and result
bookkeeping. Prints both medians and the ratio. Goal: at most 1.05.

Run: scripts/bench engine_overhead
"""

from __future__ import annotations

import sys

import torch

from bench.common import interleaved_medians
from fluxserve.defaults import default_cache_dir
from fluxserve.engines.base import GenerationRequest
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions

PROMPT = "a lighthouse on a cliff at dusk"
GOAL = 1.05


def main(rounds: int = 25) -> int:
    engine = DiffusersEngine("tiny-random", EngineOptions(cache_dir=default_cache_dir(), allow_download=False))
    engine.load()
    pipeline = engine._pipeline
    print(f"tiny-random on {engine.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'size':9} {'bare ms':>9} {'fluxserve ms':>13} {'ratio':>6}")
    worst = 0.0
    for size in (256, 512):

        def bare(size: int = size) -> object:
            generator = torch.Generator(device="cpu").manual_seed(1)
            return pipeline(
                prompt=PROMPT, width=size, height=size, num_inference_steps=4, generator=generator, guidance_scale=1.0
            ).images[0]

        def ours(size: int = size) -> object:
            request = GenerationRequest(PROMPT, width=size, height=size, seed=1)
            return engine.generate(request, progress=lambda _: None).images[0].image

        bare(), ours()  # warm up both paths
        medians = interleaved_medians({"bare": bare, "fluxserve": ours}, rounds)
        ratio = medians["fluxserve"] / medians["bare"]
        worst = max(worst, ratio)
        print(f"{size}x{size:<5} {medians['bare'] * 1000:9.1f} {medians['fluxserve'] * 1000:13.1f} {ratio:6.3f}")
    print(f"\nworst ratio {worst:.3f}; goal at most {GOAL} {'met' if worst <= GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
