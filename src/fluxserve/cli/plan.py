"""``fluxserve plan``: will a model fit this GPU (or a GPU of N GB), and which options would make it fit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import typer

from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.memory_check import plan_model
from fluxserve.engines.memory_plan import render
from fluxserve.engines.runtime import QUANTIZATIONS, ModelRuntime, Offload, Quantization
from fluxserve.engines.validation import parse_size
from fluxserve.errors import InvalidRequest


@dataclass(frozen=True)
class PlanArgs:
    model: str
    quantize_transformer: str
    quantize_text_encoder: str
    gguf_file: str | None
    offload: str
    device: str | None
    dtype: str | None
    memory_gb: float | None
    size: str
    as_json: bool
    cache_dir: Path


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise InvalidRequest(f"{option} must be one of {', '.join(allowed)}, not {value!r}", param=option)
    return value


def runtime_of(args: PlanArgs) -> ModelRuntime:
    offload: Offload = _choice(args.offload, ("none", "model", "sequential"), "--offload")  # type: ignore[assignment]
    transformer: Quantization = _choice(args.quantize_transformer, QUANTIZATIONS, "--quantize-transformer")  # type: ignore[assignment]
    text: Quantization = _choice(args.quantize_text_encoder, QUANTIZATIONS, "--quantize-text-encoder")  # type: ignore[assignment]
    if text == "gguf":
        raise InvalidRequest("gguf files are for the transformer only", param="--quantize-text-encoder")
    if args.memory_gb is not None and args.memory_gb <= 0:
        raise InvalidRequest("--memory-gb must be positive", param="--memory-gb")
    device = args.device
    if device is None and args.memory_gb is not None:
        device = "cuda"  # planning for a card of that size, whatever this machine has
    return ModelRuntime(
        device=device,
        dtype=args.dtype,
        offload=offload,
        quantize_transformer=transformer,
        quantize_text_encoder=text,
        gguf_file=args.gguf_file,
        memory_gb=args.memory_gb,
    )


def run_plan(args: PlanArgs) -> None:
    runtime = runtime_of(args)
    width, height = parse_size(args.size) or (1024, 1024)
    options = EngineOptions(cache_dir=args.cache_dir, allow_download=False, runtime=runtime)
    plan = plan_model(args.model, runtime, options, width=width, height=height)
    if args.as_json:
        typer.echo(json.dumps(plan.to_json(), indent=2))
    else:
        typer.echo(render(plan))
