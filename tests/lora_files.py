"""Tiny LoRA adapters for the tiny test models, made the way a trainer makes them.

peft adds a LoRA to the tiny transformer's layers (initialised with random, non-zero weights so
that it changes the image), and the pipeline class's own ``save_lora_weights`` writes the file,
with ``get_peft_model_state_dict`` giving the tensors: exactly the files diffusers' training
scripts write. The pipeline is loaded fresh for each file, so no engine's pipeline is touched.
"""

from __future__ import annotations

from pathlib import Path

from fluxserve.engines.loading import import_diffusers
from fluxserve.engines.tiny import tiny_model_path

PIPELINES = {
    "tiny-random": "Flux2KleinPipeline",
    "tiny-random-base": "Flux2KleinPipeline",
    "tiny-random-dev": "Flux2Pipeline",
    "tiny-random-flux1": "FluxPipeline",
    "tiny-random-schnell": "FluxPipeline",
}
TARGETS = {
    # attention projections, plus one layer only that family has (so the family shows in the names)
    "Flux2KleinPipeline": ["to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj"],
    "Flux2Pipeline": ["to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj"],
    "FluxPipeline": ["to_q", "to_k", "to_v", "to_out.0", "proj_mlp"],
}


def make_lora(model: str, cache_dir: Path, target: Path, *, seed: int, rank: int = 4) -> Path:
    """Write a LoRA for tiny model ``model`` to ``target`` (a ``.safetensors`` path) and return it."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    _, diffusers = import_diffusers()
    pipeline_class = getattr(diffusers, PIPELINES[model])
    pipeline = pipeline_class.from_pretrained(tiny_model_path(model, cache_dir))
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS[PIPELINES[model]], init_lora_weights=False)
    pipeline.transformer.add_adapter(config)
    layers = get_peft_model_state_dict(pipeline.transformer)
    target.parent.mkdir(parents=True, exist_ok=True)
    pipeline_class.save_lora_weights(target.parent, transformer_lora_layers=layers, weight_name=target.name)
    return target
