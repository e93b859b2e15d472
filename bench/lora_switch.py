"""LoRA switching: requests that alternate between two adapters vs. requests that keep one.

The tiny klein model at 512x512 (4 steps), one engine, both adapters already in its LRU (so this
measures switching, not loading): "one adapter" sends four requests with adapter A; "alternating"
sends A, B, A, B. Medians per request, interleaved; goal: alternating costs at most 5% more.
The adapters are made here like a trainer makes them (peft on the transformer's attention and
fused projections, saved with the pipeline's ``save_lora_weights``).

Run: scripts/bench lora_switch
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import interleaved_medians
from fluxserve.defaults import default_cache_dir
from fluxserve.engines.base import GenerationRequest, LoraChoice
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions, import_diffusers
from fluxserve.engines.loras import LoraOptions
from fluxserve.engines.tiny import tiny_model_path

SIZE = 512
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj"]


def make_lora(folder: Path, name: str, seed: int) -> None:
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    _, diffusers = import_diffusers()
    pipeline = diffusers.Flux2KleinPipeline.from_pretrained(tiny_model_path("tiny-random", default_cache_dir()))
    torch.manual_seed(seed)
    pipeline.transformer.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False))
    layers = get_peft_model_state_dict(pipeline.transformer)
    diffusers.Flux2KleinPipeline.save_lora_weights(
        folder, transformer_lora_layers=layers, weight_name=f"{name}.safetensors"
    )


def main(rounds: int = 7) -> int:
    with tempfile.TemporaryDirectory() as folder:
        make_lora(Path(folder), "a", 1)
        make_lora(Path(folder), "b", 2)
        options = EngineOptions(default_cache_dir(), False, loras=LoraOptions(directory=Path(folder)))
        engine = DiffusersEngine("tiny-random", options)
        engine.load()
        threads = torch.get_num_threads()
        print(f"tiny-random on {engine.device}, {SIZE}x{SIZE}, torch {torch.__version__}, {threads} threads")

        def requests(names: list[str]) -> Callable[[], None]:
            def run() -> None:
                for seed, name in enumerate(names):
                    loras = (LoraChoice(name, 0.8),)
                    engine.generate(GenerationRequest("a lighthouse", width=SIZE, height=SIZE, seed=seed, loras=loras))

            return run

        candidates = {"one adapter": requests(["a"] * 4), "alternating": requests(["a", "b"] * 2)}
        for call in candidates.values():
            call()  # both adapters loaded, every path warm
        loads = engine.adapters.loads
        medians = interleaved_medians(candidates, rounds)
        assert engine.adapters.loads == loads, "an adapter was loaded again during the timed rounds"
        one, alternating = medians["one adapter"] / 4, medians["alternating"] / 4
        print(f"{'workload':14} {'ms/request':>11}")
        print(f"{'one adapter':14} {one * 1000:11.1f}")
        print(f"{'alternating':14} {alternating * 1000:11.1f}")
        print(f"ratio alternating/one: {alternating / one:.3f} (goal <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
