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


def make_lora(
    model: str,
    cache_dir: Path,
    target: Path,
    *,
    seed: int,
    rank: int = 4,
    alpha: int | None = None,
    targets: list[str] | None = None,
    text_encoder: bool = False,
) -> Path:
    """Write a LoRA for tiny model ``model`` to ``target`` (a ``.safetensors`` path) and return it.

    ``alpha`` (default: the rank) is written into the file's metadata, as trainers do, so that the
    loader reads it back; ``targets``: the transformer layers it adapts (default ``TARGETS``);
    ``text_encoder`` (FLUX.1): it adapts the CLIP text encoder's attention too."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    _, diffusers = import_diffusers()
    pipeline_class = getattr(diffusers, PIPELINES[model])
    pipeline = pipeline_class.from_pretrained(tiny_model_path(model, cache_dir))
    torch.manual_seed(seed)
    layers = targets or TARGETS[PIPELINES[model]]
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=layers, init_lora_weights=False)
    pipeline.transformer.add_adapter(config)
    extra: dict[str, object] = {}
    if alpha is not None:
        extra["transformer_lora_adapter_metadata"] = {"r": rank, "lora_alpha": alpha, "target_modules": layers}
    if text_encoder:
        encoder_config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "k_proj", "v_proj"])
        pipeline.text_encoder.add_adapter(encoder_config)
        extra["text_encoder_lora_layers"] = get_peft_model_state_dict(pipeline.text_encoder)
    transformer_layers = get_peft_model_state_dict(pipeline.transformer)
    target.parent.mkdir(parents=True, exist_ok=True)
    pipeline_class.save_lora_weights(
        target.parent, transformer_lora_layers=transformer_layers, weight_name=target.name, **extra
    )
    return target


def build_lora_dir(folder: Path, cache_dir: Path) -> Path:
    """style, ink and third (klein), flux1-style (FLUX.1), a corrupt file and a non-LoRA file."""
    import torch
    from safetensors.torch import save_file

    make_lora("tiny-random", cache_dir, folder / "style.safetensors", seed=1)
    make_lora("tiny-random", cache_dir, folder / "ink.safetensors", seed=2)
    make_lora("tiny-random", cache_dir, folder / "more" / "third.safetensors", seed=3)
    make_lora("tiny-random-flux1", cache_dir, folder / "flux1-style.safetensors", seed=4)
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    save_file({"weight": torch.zeros(2, 2)}, str(folder / "not-a-lora.safetensors"))
    # No family in its names, and a shape no tiny model has: only the engine's fit check can tell.
    save_file(
        {
            "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, 48),
            "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(32, 4),
        },
        str(folder / "misfit.safetensors"),
    )
    save_file(
        {
            "transformer.transformer_blocks.7.attn.to_q.lora_A.weight": torch.ones(4, 32),
            "transformer.transformer_blocks.7.attn.to_q.lora_B.weight": torch.ones(32, 4),
        },
        str(folder / "deeper.safetensors"),
    )
    return folder
