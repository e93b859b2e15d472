"""A mid-size random FLUX.2 [klein]-shaped pipeline (about 50M parameters) for the memory tests.

The same classes as the tiny and the real models, with widths between the two, so that the
weights (about 200 MB in float32) and the activations are large enough to measure in the
process's resident memory.
"""

from __future__ import annotations

from pathlib import Path

from fluxserve.engines.tiny import _flux2_scheduler, _qwen_tokenizer

TEXT_HIDDEN = 256


def build_midsize(target: Path) -> Path:
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if (target / "model_index.json").is_file():
        return target
    tokenizer = _qwen_tokenizer()
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN,
            intermediate_size=1024,
            num_hidden_layers=27,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
        )
    )
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,
        num_layers=1,
        num_single_layers=3,
        attention_head_dim=64,
        num_attention_heads=8,
        joint_attention_dim=3 * TEXT_HIDDEN,
        axes_dims_rope=(16, 16, 16, 16),
        guidance_embeds=False,
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=1,
        latent_channels=32,
        norm_num_groups=32,
        patch_size=(2, 2),
    )
    pipe = Flux2KleinPipeline(
        scheduler=_flux2_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )
    pipe.save_pretrained(target)
    return target
