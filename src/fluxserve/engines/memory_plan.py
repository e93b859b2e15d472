"""A memory plan before loading: will this model fit this device, and if not, what would?

From the component counts (:mod:`fluxserve.engines.parameter_count`) and a runtime
(dtype, quantization, offload) the plan estimates the peak device memory of one request,
phase by phase, as the pipeline runs it:

1. text encoding: the text encoder(s) run on the padded prompt (512 tokens for FLUX.2);
2. denoising: the transformer runs on the image tokens (4096 at 1024x1024) plus the text tokens;
3. decoding: the VAE decodes the latents to pixels.

Each phase's peak is the weights on the device during it plus that phase's activations.
Which weights are on the device depends on the offload mode: all of them (``none``); only the
component that is running (``model``: diffusers moves each model to the device when it is
called and the previous one back); or only the biggest single layer (``sequential``).
Activations are estimated from the configs: widths, heads, tokens and channels, with
attention through fused SDPA kernels (no tokens x tokens score matrix), as on CUDA and on
PyTorch's CPU flash kernel. The estimate is checked against measured peaks in the tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, Literal

from fluxserve.engines.catalog import family_of_pipeline
from fluxserve.engines.parameter_count import ComponentCount, count_components, text_config
from fluxserve.engines.runtime import ModelRuntime, Offload, Quantization

GB = 1024**3
Verdict = Literal["fits", "tight", "does not fit", "unknown"]

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

QUANTIZED_BYTES: dict[str, float] = {
    "bnb-8bit": 1.0,  # int8 weights; one fp32 scale per output row (counted below)
    "bnb-4bit": 0.5 + 4 / 64,  # NF4: half a byte a weight, one fp32 absmax per block of 64
    "torchao-int8": 1.0,  # int8 weight-only, a scale per output channel
    "torchao-fp8": 1.0,  # float8 weight-only, a scale per output row
    "gguf": 4.5 / 8,  # without a file to measure: Q4_K, about 4.5 bits a weight
}
"""Bytes per quantized ``nn.Linear`` weight; the other parameters stay in the compute dtype."""

CUDA_OVERHEAD = GB // 2
"""cuBLAS workspaces, the caching allocator's rounding and fragmentation, kernels' scratch."""
HEADROOM = 0.95
"""A plan over this share of the device's memory is "tight": it may run, with little margin."""

OFFLOAD_COST: dict[str, float] = {"none": 0.0, "model": 3.0, "sequential": 10.0}
TRANSFORMER_COST: dict[str, float] = {
    "none": 0.0,
    "torchao-fp8": 0.5,
    "torchao-int8": 1.0,
    "bnb-4bit": 2.0,
    "gguf": 2.5,
    "bnb-8bit": 3.0,
}
TEXT_ENCODER_COST: dict[str, float] = {
    "none": 0.0,
    "torchao-fp8": 0.2,
    "torchao-int8": 0.3,
    "bnb-4bit": 0.5,
    "bnb-8bit": 0.8,
}
"""Relative slowness of each choice, used only to order the plans that fit: offloading moves
every model over PCIe on every request, sequential offload layer by layer; bitsandbytes'
8-bit matmul is slower than its 4-bit one; the text encoder runs once per prompt, so
quantizing it costs less time than quantizing the transformer."""


@dataclass(frozen=True)
class ComponentPlan:
    name: str
    class_name: str
    parameters: int
    quantization: str
    weight_bytes: int


@dataclass(frozen=True)
class PhasePlan:
    """One step of a request: what is on the device while it runs."""

    name: str
    weight_bytes: int
    activation_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes


@dataclass(frozen=True)
class Alternative:
    offload: Offload
    quantize_transformer: Quantization
    quantize_text_encoder: Quantization
    peak_bytes: int

    def flags(self) -> str:
        parts = []
        if self.quantize_transformer != "none":
            parts.append(f"--quantize-transformer {self.quantize_transformer}")
        if self.quantize_text_encoder != "none":
            parts.append(f"--quantize-text-encoder {self.quantize_text_encoder}")
        if self.offload != "none":
            parts.append(f"--offload {self.offload}")
        return " ".join(parts) or "(no quantization, nothing offloaded)"


@dataclass(frozen=True)
class MemoryPlan:
    model: str
    configs: str
    """Where the component configs came from (the model's folder, the HF cache, or fluxserve's copy)."""
    device: str
    dtype: str
    offload: Offload
    quantize_transformer: Quantization
    quantize_text_encoder: Quantization
    width: int
    height: int
    components: tuple[ComponentPlan, ...]
    phases: tuple[PhasePlan, ...]
    overhead_bytes: int
    peak_bytes: int
    available_bytes: int | None
    available_source: str
    verdict: Verdict
    alternatives: tuple[Alternative, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for phase, source in zip(data["phases"], self.phases, strict=True):
            phase["peak_bytes"] = source.peak_bytes
        for option, alternative in zip(data["alternatives"], self.alternatives, strict=True):
            option["flags"] = alternative.flags()
        return data

    def advice(self) -> str:
        """One paragraph: the verdict and what to do about it."""
        need = f"needs about {gb(self.peak_bytes)} at {self.width}x{self.height}"
        have = "" if self.available_bytes is None else f" and {gb(self.available_bytes)} is {self.available_source}"
        text = f"{self.model} ({self.current_flags()}) {need}{have}: {self.verdict}."
        if self.verdict in ("does not fit", "tight"):
            if self.alternatives:
                best = self.alternatives[:3]
                text += " Options that fit, fastest first: " + "; ".join(
                    f"{a.flags()} (about {gb(a.peak_bytes)})" for a in best
                )
                text += ". Run `fluxserve plan --model ...` for the details."
            else:
                text += " No combination of quantization and offload fits; use a device with more memory."
        return text

    def current_flags(self) -> str:
        return Alternative(self.offload, self.quantize_transformer, self.quantize_text_encoder, 0).flags()


def gb(size: int) -> str:
    return f"{size / GB:.1f} GiB"


# ---------------------------------------------------------------------------------------------
# Weights


def _weight_bytes(count: ComponentCount, quantization: str, dtype_bytes: int, gguf_bytes: int | None) -> int:
    total = (count.parameters + count.buffer_elements) * dtype_bytes
    if quantization == "none":
        return total
    if quantization == "gguf" and gguf_bytes is not None:
        return gguf_bytes
    kept = (count.parameters - count.linear_weights + count.buffer_elements) * dtype_bytes
    return int(kept + count.linear_weights * QUANTIZED_BYTES[quantization])


# ---------------------------------------------------------------------------------------------
# Activations, from the configs


def _transformer_activations(count: ComponentCount, image_tokens: int, text_tokens: int, act: int) -> int:
    config = count.config
    width = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    mlp_ratio = float(config.get("mlp_ratio", 4.0))
    gated = count.class_name.startswith("Flux2")  # SwiGLU: the MLP projection is twice as wide
    tokens = image_tokens + text_tokens
    # The widest moment of a block, per token and in units of the hidden width: the fused
    # attention + MLP projection (3 + gate x ratio), q/k/v after norm and rotary (3), the
    # attention output (1), the activated MLP (ratio), the concatenation fed to the output
    # projection (1 + ratio), its output (1), the residual stream and its norm (2).
    per_token = 3 + (2 if gated else 1) * mlp_ratio + 3 + 1 + mlp_ratio + (1 + mlp_ratio) + 1 + 2
    blocks = int(tokens * width * per_token * act)
    rotary = tokens * int(config["attention_head_dim"]) * 2 * 4  # cos and sin tables in float32
    inputs = image_tokens * int(config.get("in_channels", 64)) * 4 * 3  # latents, noise prediction, step
    context = text_tokens * int(config.get("joint_attention_dim", width)) * act
    return blocks + rotary + inputs + context


def _text_encoder_activations(count: ComponentCount, tokens: int, act: int) -> int:
    config = text_config(count)
    if "d_model" in config:  # T5: its own attention with an explicit position bias per head
        hidden, layers = int(config["d_model"]), int(config["num_layers"])
        heads, intermediate = int(config["num_heads"]), int(config["d_ff"])
        scores = heads * tokens * tokens * 4 * 3  # position bias, scores, softmax (float32)
        return int(tokens * (hidden * 4 + intermediate * 3) * act + scores + tokens * hidden * 4)
    hidden = int(config["hidden_size"])
    layers = int(config["num_hidden_layers"])
    intermediate = int(config.get("intermediate_size", 4 * hidden))
    states = (layers + 1) * tokens * hidden * act  # the pipeline asks for every layer's output
    mlp = tokens * intermediate * 3 * act
    vocab = (
        int(config.get("vocab_size", 0))
        if count.class_name.endswith(("ForCausalLM", "ForConditionalGeneration"))
        else 0
    )
    logits = tokens * vocab * act  # a causal LM computes logits for every position
    return int(states + mlp + logits + tokens * hidden * 6 * act)


def _vae_decode_activations(count: ComponentCount, width: int, height: int, act: int) -> int:
    config = count.config
    channels = list(reversed(config["block_out_channels"]))
    levels = len(channels)
    latent_pixels = (width // 2 ** (levels - 1)) * (height // 2 ** (levels - 1))
    peak = 0
    for index, out_channels in enumerate(channels):
        pixels = latent_pixels * 4**index
        in_channels = channels[max(index - 1, 0)]
        # A resnet at its widest: its input and normed copy, the conv output and the sum, and
        # the shortcut's conv where the width changes. Checked against measured peaks
        # (tests/test_memory_plan.py).
        shortcut = out_channels if in_channels != out_channels else 0
        peak = max(peak, (2 * in_channels + 2 * out_channels + shortcut) * pixels)
        if index < levels - 1:  # the upsampler: its input, the interpolated copy and the conv output
            peak = max(peak, out_channels * pixels + 2 * out_channels * pixels * 4)
    image = 3 * width * height * 4 * 3  # the decoded tensor in float32, its clamp, the uint8 copy
    return int(peak * act + image)


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class PlanInputs:
    """Everything a plan reads: the model's components and what the pipeline feeds them."""

    model: str
    configs: str
    components: tuple[ComponentCount, ...]
    text_tokens: dict[str, int]
    """Tokens each text encoder runs on (padded prompt length)."""
    gguf_bytes: int | None = None


def plan_inputs(model: str, folder: Path, configs: str, gguf_file: str | None = None) -> PlanInputs:
    """Read ``folder``'s configs: component counts and the prompt lengths of its family."""
    components = count_components(folder)
    index = json.loads((folder / "model_index.json").read_text())
    transformer = next(c for c in components if c.name == "transformer")
    family = family_of_pipeline(
        str(index.get("_class_name")),
        is_distilled=bool(index.get("is_distilled", False)),
        guidance_embeds=bool(transformer.config.get("guidance_embeds", False)),
    )
    text_tokens = {}
    for component in components:
        if component.name.startswith("text_encoder"):
            positions = text_config(component).get("max_position_embeddings")
            clip_like = component.class_name.startswith("CLIP")
            text_tokens[component.name] = int(positions) if clip_like and positions else family.max_sequence_length
    gguf_bytes = None
    if gguf_file is not None and Path(gguf_file).expanduser().is_file():
        gguf_bytes = Path(gguf_file).expanduser().stat().st_size
    return PlanInputs(model, configs, components, text_tokens, gguf_bytes)


def _phases(
    inputs: PlanInputs,
    *,
    dtype_bytes: int,
    offload: str,
    quantize: Mapping[str, str],
    width: int,
    height: int,
) -> tuple[tuple[ComponentPlan, ...], tuple[PhasePlan, ...]]:
    components = tuple(
        ComponentPlan(
            c.name,
            c.class_name,
            c.parameters,
            quantize.get(c.name, "none"),
            _weight_bytes(c, quantize.get(c.name, "none"), dtype_bytes, inputs.gguf_bytes),
        )
        for c in inputs.components
    )
    by_name = {c.name: c for c in inputs.components}
    weights = {c.name: c.weight_bytes for c in components}
    vae = by_name.get("vae")
    latent_scale = 2 ** len(vae.config["block_out_channels"]) if vae is not None else 16  # VAE 8x, 2x2 patches
    image_tokens = (width // latent_scale) * (height // latent_scale)
    text_tokens = sum(inputs.text_tokens.values()) // max(len(inputs.text_tokens), 1)
    activations: dict[str, int] = {}
    for name, count in by_name.items():
        if name.startswith("text_encoder"):
            activations[name] = _text_encoder_activations(count, inputs.text_tokens[name], dtype_bytes)
        elif name == "transformer":
            activations[name] = _transformer_activations(count, image_tokens, text_tokens, dtype_bytes)
        elif name == "vae":
            activations[name] = _vae_decode_activations(count, width, height, dtype_bytes)
        if quantize.get(name, "none") != "none":  # a quantized layer is dequantized to compute with it
            activations[name] = activations.get(name, 0) + count.largest_linear * dtype_bytes
    phases = []
    for name in activations:
        if offload == "none":
            resident = sum(weights.values())
        elif offload == "model":
            resident = weights[name]
        else:  # sequential: one layer at a time, plus the one being fetched
            resident = 2 * max(c.largest_leaf for c in inputs.components) * dtype_bytes
        phases.append(PhasePlan(name, resident, activations[name]))
    return components, tuple(phases)


def estimate(
    inputs: PlanInputs,
    runtime: ModelRuntime,
    *,
    device: str,
    dtype: str,
    width: int = 1024,
    height: int = 1024,
) -> tuple[tuple[ComponentPlan, ...], tuple[PhasePlan, ...], int, int]:
    """Components, phases, fixed overhead and peak bytes of one request under ``runtime``."""
    quantize = {"transformer": runtime.quantize_transformer}
    for component in inputs.components:
        if component.name.startswith("text_encoder"):
            quantize[component.name] = runtime.quantize_text_encoder
    components, phases = _phases(
        inputs, dtype_bytes=DTYPE_BYTES[dtype], offload=runtime.offload, quantize=quantize, width=width, height=height
    )
    overhead = CUDA_OVERHEAD if device.startswith("cuda") else 0
    return components, phases, overhead, max(p.peak_bytes for p in phases) + overhead


def verdict(peak: int, available: int | None) -> Verdict:
    if available is None:
        return "unknown"
    if peak <= available * HEADROOM:
        return "fits"
    return "tight" if peak <= available else "does not fit"


def candidate_options(device: str, gguf: bool) -> list[tuple[Offload, Quantization, Quantization]]:
    """Every runtime combination worth proposing on ``device``."""
    on_cpu = device == "cpu"
    offloads: tuple[Offload, ...] = ("none",) if on_cpu else ("none", "model", "sequential")
    transformer: list[Quantization] = ["none", "torchao-int8"] if on_cpu else list(TRANSFORMER_COST)  # type: ignore[arg-type]
    if not gguf and "gguf" in transformer:
        transformer.remove("gguf")
    text: list[Quantization] = ["none", "torchao-int8"] if on_cpu else list(TEXT_ENCODER_COST)  # type: ignore[arg-type]
    options: list[tuple[Offload, Quantization, Quantization]] = [
        (o, t, e) for o, t, e in product(offloads, transformer, text) if o != "sequential"
    ]
    if not on_cpu:  # sequential offload keeps one layer on the device: quantizing on top saves nothing
        options.append(("sequential", "none", "none"))
    return options


def alternatives(
    inputs: PlanInputs, runtime: ModelRuntime, *, device: str, dtype: str, width: int, height: int, available: int
) -> tuple[Alternative, ...]:
    """The combinations of quantization and offload that fit ``available``, fastest first."""
    found = []
    for offload, transformer, text in candidate_options(device, runtime.gguf_file is not None):
        candidate = replace(runtime, offload=offload, quantize_transformer=transformer, quantize_text_encoder=text)
        *_, peak = estimate(inputs, candidate, device=device, dtype=dtype, width=width, height=height)
        if verdict(peak, available) == "fits":
            cost = OFFLOAD_COST[offload] + TRANSFORMER_COST[transformer] + TEXT_ENCODER_COST[text]
            found.append((cost, peak, Alternative(offload, transformer, text, peak)))
    found.sort(key=lambda item: (item[0], item[1]))
    # Keep an option only if it needs less memory than every faster one: the others are
    # slower for no saving.
    kept: list[Alternative] = []
    for _, peak, alternative in found:
        if not kept or peak < min(k.peak_bytes for k in kept):
            kept.append(alternative)
    return tuple(kept)


def make_plan(
    inputs: PlanInputs,
    runtime: ModelRuntime,
    *,
    device: str,
    dtype: str,
    available: int | None,
    available_source: str,
    width: int = 1024,
    height: int = 1024,
) -> MemoryPlan:
    """The plan of ``runtime`` on ``device`` against ``available`` bytes, with the options that fit."""
    components, phases, overhead, peak = estimate(
        inputs, runtime, device=device, dtype=dtype, width=width, height=height
    )
    result = verdict(peak, available)
    options: tuple[Alternative, ...] = ()
    if available is not None:
        options = alternatives(
            inputs, runtime, device=device, dtype=dtype, width=width, height=height, available=available
        )
    return MemoryPlan(
        model=inputs.model,
        configs=inputs.configs,
        device=device,
        dtype=dtype,
        offload=runtime.offload,
        quantize_transformer=runtime.quantize_transformer,
        quantize_text_encoder=runtime.quantize_text_encoder,
        width=width,
        height=height,
        components=components,
        phases=phases,
        overhead_bytes=overhead,
        peak_bytes=peak,
        available_bytes=available,
        available_source=available_source,
        verdict=result,
        alternatives=options,
    )


def render(plan: MemoryPlan, limit: int = 8) -> str:
    """The plan as text for a terminal."""
    lines = [
        f"Model:   {plan.model} (configs: {plan.configs})",
        f"Runtime: {plan.device}, {plan.dtype}, {plan.current_flags()}",
        "",
        f"{'component':15} {'class':34} {'parameters':>11} {'weights':>9}  quantization",
    ]
    for c in plan.components:
        lines.append(
            f"{c.name:15} {c.class_name:34} {_count(c.parameters):>11} {gb(c.weight_bytes):>9}  {c.quantization}"
        )
    lines += ["", f"Peak for one {plan.width}x{plan.height} image, by phase:"]
    for p in plan.phases:
        lines.append(
            f"  {p.name:15} weights on device {gb(p.weight_bytes):>9} + activations {gb(p.activation_bytes):>8}"
            f" = {gb(p.peak_bytes)}"
        )
    if plan.overhead_bytes:
        lines.append(f"  + {gb(plan.overhead_bytes)} for CUDA workspace and allocator overhead")
    lines.append(f"Peak: {gb(plan.peak_bytes)}")
    if plan.available_bytes is None:
        lines.append(f"Available: unknown ({plan.available_source}); pass --memory-gb to compare")
    else:
        lines.append(f"Available: {gb(plan.available_bytes)} ({plan.available_source})")
    lines.append(f"Verdict: {plan.verdict}")
    if plan.available_bytes is not None:
        if plan.alternatives:
            lines += ["", "Options that fit, fastest first (peak):"]
            lines += [f"  {a.flags():85} {gb(a.peak_bytes)}" for a in plan.alternatives[:limit]]
            if any("fp8" in a.flags() for a in plan.alternatives[:limit]):
                lines.append("  (torchao-fp8 needs a GPU with fp8 support: compute capability 8.9 or newer)")
        else:
            lines += ["", "No combination of quantization and offload fits this memory."]
    return "\n".join(lines)


def _count(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.2f} B"
    if n >= 10**6:
        return f"{n / 1e6:.1f} M"
    return f"{n / 1e3:.1f} K" if n >= 1000 else str(n)
