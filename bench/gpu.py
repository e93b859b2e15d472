"""Real-size FLUX models with random weights: speed and peak memory of each runtime option.

Builds the model's transformer, text encoder and VAE from the published configs fluxserve
ships (``engines/configs``; no download), with random weights, saves them once under the
cache folder, then measures, each in a fresh process so that peaks do not mix:

- the bare diffusers pipeline (``from_pretrained`` + ``.to(device)`` + one call);
- fluxserve with its defaults, through ``DiffusersEngine``;
- each ``ModelRuntime`` variant (quantizations, step caches, compile, attention backends,
  offload). A variant that fluxserve refuses here (a CUDA-only option on a CPU, a library
  not installed) prints "skipped: <reason>".

Figures: seconds per denoising step (median of the steps of the timed run), end-to-end
seconds of one image (after a warm-up image), and peak memory (CUDA: the allocator's peak;
CPU: the process's peak resident memory after loading). Ratios are against the bare pipeline
of the same run.

Run: ``scripts/bench gpu`` (on a GPU: 1024x1024, real sizes); ``python -m bench.gpu --small``
(shrunken widths, 256x256: kept working on a CPU). ``--model`` picks the model
(flux.2-klein-4b by default). FLUX.2 [dev] at real size needs about 110 GB of disk for its
random weights.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fluxserve.defaults import default_cache_dir
from fluxserve.engines.memory_check import shipped_configs
from fluxserve.engines.runtime import ModelRuntime

PROMPT = "a lighthouse on a cliff at dusk, oil painting"

VARIANTS: dict[str, ModelRuntime] = {
    "fluxserve": ModelRuntime(),
    "transformer bnb-8bit": ModelRuntime(quantize_transformer="bnb-8bit"),
    "transformer bnb-4bit": ModelRuntime(quantize_transformer="bnb-4bit"),
    "transformer torchao-int8": ModelRuntime(quantize_transformer="torchao-int8"),
    "transformer torchao-fp8": ModelRuntime(quantize_transformer="torchao-fp8"),
    "both bnb-4bit": ModelRuntime(quantize_transformer="bnb-4bit", quantize_text_encoder="bnb-4bit"),
    "step cache first-block": ModelRuntime(step_cache="first-block"),
    "step cache taylorseer": ModelRuntime(step_cache="taylorseer"),
    "step cache magcache": ModelRuntime(step_cache="magcache"),
    "compile": ModelRuntime(compile=True),
    "attention native": ModelRuntime(attention="native"),
    "attention flash": ModelRuntime(attention="flash"),
    "attention sage": ModelRuntime(attention="sage"),
    "offload model": ModelRuntime(offload="model"),
}


@dataclass(frozen=True)
class Figures:
    step_seconds: float
    e2e_seconds: float
    peak_bytes: int


# ---------------------------------------------------------------------------------------------
# Building the random-weight model


def _shrink_transformer(config: dict[str, Any]) -> dict[str, Any]:
    heads = 2
    head_dim = 16
    return {
        **config,
        "num_layers": 1,
        "num_single_layers": 1,
        "num_attention_heads": heads,
        "attention_head_dim": head_dim,
        "axes_dims_rope": [4, 4, 4, 4],
        "joint_attention_dim": 3 * 32,
    }


def _shrink_text(config: dict[str, Any]) -> dict[str, Any]:
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1}
    if "text_config" in config:
        vision = {**config["vision_config"], "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
        vision |= {"num_attention_heads": 2, "head_dim": 16, "image_size": 112}
        return {**config, "text_config": {**config["text_config"], **small, "head_dim": 16}, "vision_config": vision}
    return {**config, **small, "head_dim": 16}


def _shrink_vae(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4}


def build(model: str, small: bool, cache: Path) -> Path:
    """The random-weight pipeline folder for ``model`` (built on first use)."""
    target = cache / "bench-gpu" / (model + ("-small" if small else ""))
    if (target / "model_index.json").is_file():
        return target
    import diffusers
    import torch
    import transformers

    from fluxserve.engines.tiny import _flux2_scheduler, _qwen_tokenizer

    source = shipped_configs(model)
    if source is None or not model.startswith("flux.2"):
        raise SystemExit(f"bench/gpu.py builds FLUX.2 models from shipped configs; not {model}")
    device = "cuda" if torch.cuda.is_available() and not small else "cpu"
    index = json.loads((source / "model_index.json").read_text())
    parts: dict[str, Any] = {}
    for name in ("transformer", "text_encoder", "vae"):
        config = json.loads((source / name / "config.json").read_text())
        if small:
            shrink = {"transformer": _shrink_transformer, "text_encoder": _shrink_text, "vae": _shrink_vae}[name]
            config = shrink(config)
        torch.manual_seed(0)
        with torch.device(device):
            if index[name][0] == "diffusers":
                model_class = getattr(diffusers, index[name][1])
                parts[name] = model_class.from_config(config)
            else:
                loaded = transformers.AutoConfig.for_model(**config)
                parts[name] = getattr(transformers, index[name][1])(loaded)
        parts[name].to(torch.bfloat16)
    if small:  # the tiny tokenizer's vocabulary is small; the shrunken embedding matches it
        parts["text_encoder"].resize_token_embeddings(len(_qwen_tokenizer()))
    pipeline_class = getattr(diffusers, index["_class_name"])
    extra = {"is_distilled": index["is_distilled"]} if "is_distilled" in index else {}
    pipe = pipeline_class(scheduler=_flux2_scheduler(), tokenizer=_qwen_tokenizer(), **parts, **extra)
    pipe.save_pretrained(target)
    return target


# ---------------------------------------------------------------------------------------------
# Measuring one variant (in its own process)


def _reset_peak(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def _peak(torch: Any, device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(folder: Path, variant: str, size: int, steps: int | None) -> Figures:
    import torch

    from fluxserve.engines.base import GenerationRequest
    from fluxserve.engines.diffusers_engine import DiffusersEngine
    from fluxserve.engines.loading import EngineOptions

    stamps: list[float] = []

    def on_step(*_: Any) -> dict[str, Any]:
        stamps.append(time.perf_counter())
        return {}

    if variant == "bare diffusers":
        import diffusers

        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        index = json.loads((folder / "model_index.json").read_text())
        pipe = getattr(diffusers, index["_class_name"]).from_pretrained(folder, dtype=dtype).to(device)
        pipe.set_progress_bar_config(disable=True)

        def run() -> None:
            generator = torch.Generator("cpu").manual_seed(1)
            pipe(
                prompt=PROMPT,
                width=size,
                height=size,
                num_inference_steps=steps or 4,
                guidance_scale=1.0,
                generator=generator,
                callback_on_step_end=lambda p, i, t, k: on_step() or {},
            )
    else:
        runtime = VARIANTS[variant]
        engine = DiffusersEngine(str(folder), EngineOptions(default_cache_dir(), False, runtime))
        engine.load()
        device = engine.device

        def run() -> None:
            engine.generate(
                GenerationRequest(PROMPT, width=size, height=size, seed=1, steps=steps),
                progress=lambda _: on_step(),
            )

    run()  # warm-up: compile, kernels, caches
    stamps.clear()
    _reset_peak(torch, device)
    started = time.perf_counter()
    run()
    e2e = time.perf_counter() - started
    step_times = [b - a for a, b in itertools.pairwise(stamps)]
    step = statistics.median(step_times) if step_times else e2e
    return Figures(step, e2e, _peak(torch, device))


# ---------------------------------------------------------------------------------------------


def _run_variant(folder: Path, variant: str, size: int, steps: int | None) -> Figures | str:
    command = [sys.executable, "-m", "bench.gpu", "--measure", variant, "--folder", str(folder), "--size", str(size)]
    if steps is not None:
        command += ["--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return f"failed: {errors[-1] if errors else done.returncode}"
    result = json.loads(lines[-1])
    return str(result["skipped"]) if "skipped" in result else Figures(**result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flux.2-klein-4b")
    parser.add_argument("--small", action="store_true", help="shrunken widths at 256x256, for a CPU")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--variants", nargs="*", default=None, help="variant names (default: all)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        from fluxserve.errors import FluxserveError

        try:
            figures = measure(Path(args.folder), args.measure, args.size, args.steps)
        except FluxserveError as error:
            print(json.dumps({"skipped": f"skipped: {error}"}))
            return 0
        print(json.dumps(asdict(figures)))
        return 0
    import torch

    on_gpu = torch.cuda.is_available()
    small = args.small or not on_gpu
    size = args.size or (256 if small else 1024)
    folder = build(args.model, small, default_cache_dir())
    where = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}{' (shrunken)' if small else ''} at {size}x{size}, random weights, on {where}")
    print(f"{'variant':28} {'s/step':>8} {'e2e s':>8} {'peak GiB':>9} {'step x':>7} {'e2e x':>7}")
    names = ["bare diffusers", *(args.variants or VARIANTS)]
    bare: Figures | None = None
    for name in names:
        result = _run_variant(folder, name, size, args.steps)
        if isinstance(result, str):
            print(f"{name:28} {result}")
            continue
        bare = bare or (result if name == "bare diffusers" else None)
        ratios = ("", "")
        if bare is not None:
            ratios = (f"{result.step_seconds / bare.step_seconds:.2f}", f"{result.e2e_seconds / bare.e2e_seconds:.2f}")
        print(
            f"{name:28} {result.step_seconds:8.3f} {result.e2e_seconds:8.3f} {result.peak_bytes / 1024**3:9.2f}"
            f" {ratios[0]:>7} {ratios[1]:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
