"""GGUF files of a tiny FLUX.2 transformer, written the way published FLUX GGUF files are.

Published files (made with the llama.cpp tools from Black Forest Labs' checkpoints) keep the
original key layout (``double_blocks.0.img_attn.qkv.weight``...), quantize the 2-D weights
(Q8_0, Q4_0...) and keep the vectors and the weights whose rows do not split into quantization
blocks in F32/F16. diffusers converts that layout back to its own when it loads the file, so a
file written in diffusers' layout would skip the conversion that real files go through.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

_RENAMES = [
    (r"time_guidance_embed\.timestep_embedder\.linear_1\.", "time_in.in_layer."),
    (r"time_guidance_embed\.timestep_embedder\.linear_2\.", "time_in.out_layer."),
    (r"time_guidance_embed\.guidance_embedder\.linear_1\.", "guidance_in.in_layer."),
    (r"time_guidance_embed\.guidance_embedder\.linear_2\.", "guidance_in.out_layer."),
    (r"(double_stream_modulation_img|double_stream_modulation_txt|single_stream_modulation)\.linear\.", r"\1.lin."),
    (r"x_embedder\.", "img_in."),
    (r"context_embedder\.", "txt_in."),
    (r"proj_out\.", "final_layer.linear."),
    (r"transformer_blocks\.(\d+)\.attn\.norm_q\.weight", r"double_blocks.\1.img_attn.norm.query_norm.scale"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_k\.weight", r"double_blocks.\1.img_attn.norm.key_norm.scale"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_added_q\.weight", r"double_blocks.\1.txt_attn.norm.query_norm.scale"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_added_k\.weight", r"double_blocks.\1.txt_attn.norm.key_norm.scale"),
    (r"transformer_blocks\.(\d+)\.attn\.to_out\.0\.", r"double_blocks.\1.img_attn.proj."),
    (r"transformer_blocks\.(\d+)\.attn\.to_add_out\.", r"double_blocks.\1.txt_attn.proj."),
    (r"transformer_blocks\.(\d+)\.ff\.linear_in\.", r"double_blocks.\1.img_mlp.0."),
    (r"transformer_blocks\.(\d+)\.ff\.linear_out\.", r"double_blocks.\1.img_mlp.2."),
    (r"transformer_blocks\.(\d+)\.ff_context\.linear_in\.", r"double_blocks.\1.txt_mlp.0."),
    (r"transformer_blocks\.(\d+)\.ff_context\.linear_out\.", r"double_blocks.\1.txt_mlp.2."),
    (r"single_transformer_blocks\.(\d+)\.attn\.to_qkv_mlp_proj\.", r"single_blocks.\1.linear1."),
    (r"single_transformer_blocks\.(\d+)\.attn\.to_out\.", r"single_blocks.\1.linear2."),
    (r"single_transformer_blocks\.(\d+)\.attn\.norm_q\.weight", r"single_blocks.\1.norm.query_norm.scale"),
    (r"single_transformer_blocks\.(\d+)\.attn\.norm_k\.weight", r"single_blocks.\1.norm.key_norm.scale"),
]
_FUSED_QKV = {"to_{}": "img_attn.qkv", "add_{}_proj": "txt_attn.qkv"}


def flux2_original_layout(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A diffusers FLUX.2 transformer's weights under Black Forest Labs' names (the inverse of diffusers')."""
    state = dict(state)
    original: dict[str, np.ndarray] = {}
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"transformer_blocks\.(\d+)\.", key))}
    for block in sorted(blocks):
        for diffusers_name, name in _FUSED_QKV.items():
            parts = [state.pop(f"transformer_blocks.{block}.attn.{diffusers_name.format(x)}.weight") for x in "qkv"]
            original[f"double_blocks.{block}.{name}.weight"] = np.concatenate(parts)
    # diffusers orders the final modulation (scale, shift); the original (shift, scale).
    scale, shift = np.split(state.pop("norm_out.linear.weight"), 2)
    original["final_layer.adaLN_modulation.1.weight"] = np.concatenate([shift, scale])
    for key, value in state.items():
        for pattern, replacement in _RENAMES:
            renamed, count = re.subn(f"^{pattern}", replacement, key)
            if count:
                original[renamed] = value
                break
        else:
            raise KeyError(f"no original name for {key}")
    return original


def write_gguf(path: Path, tensors: dict[str, np.ndarray], quantization: str = "Q8_0") -> dict[str, str]:
    """Write ``tensors`` to a GGUF file, 2-D ones quantized where their rows allow; return each tensor's type."""
    import gguf

    kind = gguf.GGMLQuantizationType[quantization]
    block_size, _ = gguf.GGML_QUANT_SIZES[kind]
    writer = gguf.GGUFWriter(str(path), arch="flux")
    types = {}
    for name, value in tensors.items():
        if value.ndim == 2 and value.shape[-1] % block_size == 0:
            writer.add_tensor(name, gguf.quants.quantize(value.astype(np.float32), kind), raw_dtype=kind)
            types[name] = quantization
        elif value.ndim == 2:
            writer.add_tensor(name, value.astype(np.float16))
            types[name] = "F16"
        else:
            writer.add_tensor(name, value.astype(np.float32))
            types[name] = "F32"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return types


def write_transformer_gguf(transformer: Any, path: Path, quantization: str = "Q8_0") -> dict[str, str]:
    """A loaded diffusers FLUX.2 transformer as a published-style GGUF file."""
    state = {key: value.detach().float().numpy() for key, value in transformer.state_dict().items()}
    return write_gguf(path, flux2_original_layout(state), quantization)
