"""Tiny FLUX pipelines with seeded random weights, built offline.

They have the real architectures (the same diffusers and transformers classes, the same
component layout, the same 8x VAE downsampling) at a few megabytes, so the whole stack runs
on a CPU with no download. They produce noise, not pictures.

A tiny model is built once into a cache folder and then loaded through the same
``from_pretrained`` path as real weights. Building is deterministic: the same name gives the
same files, and so the same images, on every machine.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bump when a builder changes, so stale caches are rebuilt instead of reused.
TINY_FORMAT_VERSION = 1

_TEXT_HIDDEN = 32
_SEED = 0

# A chat template that renders both plain-string and list-of-parts message contents, which
# is what the Qwen3 (klein) and Mistral (dev) prompt encoders send.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModel:
    name: str
    description: str
    build: Callable[[Path], None]


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2's mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    by_byte = dict(zip(order, codes, strict=True))
    return [chr(by_byte[b]) for b in range(256)]


_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("a", "n"), ("o", "r"), ("e", "r"), ("Ġ", "a")]


def _byte_level_vocab(specials: list[str], suffix: str = "") -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A hand-written byte-level BPE vocabulary: every byte, a few merges, the special tokens."""
    tokens = list(_byte_alphabet())
    if suffix:
        tokens += [t + suffix for t in _byte_alphabet()]
    merges = [(a, b) for a, b in _MERGES]
    tokens += [a + b for a, b in merges]
    if suffix:
        merges += [(a, b + suffix) for a, b in _MERGES]
        tokens += [a + b + suffix for a, b in _MERGES]
    tokens += specials
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}, merges


def _qwen_tokenizer() -> Any:
    from transformers import Qwen2Tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab, merges = _byte_level_vocab(specials)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def _flux2_vae() -> Any:
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        patch_size=(2, 2),
        use_quant_conv=True,
        use_post_quant_conv=True,
    )


def _flux2_transformer(guidance_embeds: bool) -> Any:
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * _TEXT_HIDDEN,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance_embeds,
    )


def _flux2_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )


def _build_klein(target: Path, *, distilled: bool) -> None:
    import torch
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = _qwen_tokenizer()
    torch.manual_seed(_SEED)
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=_TEXT_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=27,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
        )
    )
    pipe = Flux2KleinPipeline(
        scheduler=_flux2_scheduler(),
        vae=_flux2_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=_flux2_transformer(guidance_embeds=False),
        is_distilled=distilled,
    )
    pipe.save_pretrained(target)


def _build_dev(target: Path) -> None:
    import torch
    from diffusers import Flux2Pipeline
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralVisionConfig,
    )

    tokenizer = _qwen_tokenizer()
    torch.manual_seed(_SEED)
    config = Mistral3Config(
        text_config=MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=_TEXT_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=30,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=1024,
        ),
        vision_config=PixtralVisionConfig(
            hidden_size=_TEXT_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            head_dim=16,
            image_size=112,
            patch_size=14,
        ),
        image_token_index=10,
        spatial_merge_size=2,
    )
    pipe = Flux2Pipeline(
        scheduler=_flux2_scheduler(),
        vae=_flux2_vae(),
        text_encoder=Mistral3ForConditionalGeneration(config),
        tokenizer=tokenizer,
        transformer=_flux2_transformer(guidance_embeds=True),
    )
    pipe.save_pretrained(target)


def _build_flux1(target: Path, *, guidance_embeds: bool) -> None:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5Tokenizer,
    )

    vocab, merges = _byte_level_vocab(["<|startoftext|>", "<|endoftext|>"], suffix="</w>")
    clip_tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    t5_pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    t5_pieces += [(ch, -1.0) for ch in "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,"]
    t5_tokenizer = T5Tokenizer(vocab=t5_pieces, extra_ids=0, model_max_length=512)

    torch.manual_seed(_SEED)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            hidden_size=_TEXT_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=_TEXT_HIDDEN,
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=_TEXT_HIDDEN,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_heads=2,
            feed_forward_proj="gated-gelu",
            relative_attention_num_buckets=8,
        )
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_TEXT_HIDDEN,
        pooled_projection_dim=_TEXT_HIDDEN,
        axes_dims_rope=(4, 6, 6),
        guidance_embeds=guidance_embeds,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(target)


TINY_MODELS: dict[str, TinyModel] = {
    m.name: m
    for m in (
        TinyModel(
            "tiny-random", "FLUX.2 [klein]-shaped, step-distilled (4 steps)", lambda p: _build_klein(p, distilled=True)
        ),
        TinyModel(
            "tiny-random-base", "FLUX.2 [klein] base-shaped (real guidance)", lambda p: _build_klein(p, distilled=False)
        ),
        TinyModel("tiny-random-dev", "FLUX.2 [dev]-shaped (guidance-distilled)", _build_dev),
        TinyModel(
            "tiny-random-flux1",
            "FLUX.1 [dev]-shaped (no reference images)",
            lambda p: _build_flux1(p, guidance_embeds=True),
        ),
        TinyModel(
            "tiny-random-schnell",
            "FLUX.1 [schnell]-shaped (no guidance)",
            lambda p: _build_flux1(p, guidance_embeds=False),
        ),
    )
}


def tiny_model_path(name: str, cache_dir: Path) -> Path:
    """Return the folder of tiny model ``name``, building it into ``cache_dir`` if needed."""
    model = TINY_MODELS[name]
    target = cache_dir / "tiny" / f"{name}-v{TINY_FORMAT_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.build(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another process finished the same build first; its copy is identical.
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
