"""Speed options for one loaded pipeline: step caching, regional compile, attention backend.

All three are diffusers' own mechanisms, switched on per model by :class:`ModelRuntime`:

- ``step_cache``: a cache hook on the transformer (``diffusers.hooks``) that reuses work from an
  earlier denoising step instead of computing it again. What works with each family in diffusers
  0.42.1 (:data:`STEP_CACHES_BY_PIPELINE`):

  - ``first-block`` (First-Block Cache): runs the first block; when its residual barely changed
    since the last full step, skips the other blocks and reuses their residual. FLUX.1 only: on
    FLUX.2 the last (single-stream) block returns the joined text+image sequence, which the hook
    cannot subtract from the first block's image-only output.
  - ``taylorseer``: computes every attention layer in full every ``interval`` steps and predicts
    it in between from a first-order Taylor expansion. All families.
  - ``magcache``: skips whole steps while the accumulated change of the residual's magnitude,
    predicted from per-step magnitude ratios, stays under a threshold. The ratios belong to the
    checkpoint: diffusers publishes them for FLUX.1 (``FLUX_MAG_RATIOS``); for FLUX.2 they are
    calibrated at load by one full generation (:func:`calibrate_magnitude_ratios`).

  The hooks keep per-run state: :meth:`Speedups.run` resets it before every call (a canceled call
  does not reach the pipeline's own reset), sets the step count MagCache needs, and enters the
  transformer's cache context for ``Flux2Pipeline``, whose ``__call__`` does not enter one.
- ``compile``: ``compile_repeated_blocks(fullgraph=True)`` (regional compile of the double- and
  single-stream blocks, ``_repeated_blocks``); the compile itself happens at the first call, which
  the engine makes while loading. Not with a step cache: the hooks' per-step decisions break the
  full graph.
- ``attention``: ``transformer.set_attention_backend(name)``, checked by running a small attention
  through the backend on the model's device and dtype at load.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fluxserve.engines.runtime import ModelRuntime, StepCache
from fluxserve.errors import InvalidRequest

STEP_CACHES_BY_PIPELINE: dict[str, tuple[StepCache, ...]] = {
    "FluxPipeline": ("first-block", "taylorseer", "magcache"),
    "Flux2KleinPipeline": ("taylorseer", "magcache"),
    "Flux2Pipeline": ("taylorseer", "magcache"),
}
"""The step caches that work with each pipeline's transformer in diffusers 0.42.1."""

_NO_CACHE_CONTEXT = frozenset({"Flux2Pipeline", "FluxInpaintPipeline"})
"""Pipelines whose ``__call__`` calls the transformer outside ``transformer.cache_context``."""

_CALIBRATION_PROMPT = "a photograph of a lighthouse on a rocky coast at sunset, detailed, sharp focus"


@dataclass(frozen=True)
class CacheTuning:
    """How eagerly each step cache skips work. The defaults are diffusers' own."""

    first_block_threshold: float = 0.05
    taylorseer_interval: int = 5
    taylorseer_full_steps_first: int = 3
    magcache_threshold: float = 0.06
    magcache_max_skip_steps: int = 3
    magcache_retention: float = 0.2
    calibration_size: int = 1024
    """Width and height of the generation that calibrates MagCache's ratios (FLUX.2)."""


@dataclass(frozen=True)
class CalibrationCall:
    """How to call the pipeline once in full: the family's default steps and guidance."""

    steps: int
    guidance_scale: float


def check_speed_options(pipeline_class: str, model: str, runtime: ModelRuntime) -> None:
    """Refuse, before any weights load, a speed option that cannot work for this pipeline."""
    works = STEP_CACHES_BY_PIPELINE.get(pipeline_class, ())
    if runtime.step_cache != "none" and runtime.step_cache not in works:
        raise InvalidRequest(
            f"model {model!r} ({pipeline_class}) cannot use step_cache={runtime.step_cache!r} with diffusers' "
            f"cache hooks; use one of: {', '.join(works) or 'none'}",
            param="step_cache",
        )
    if runtime.compile and runtime.step_cache != "none":
        raise InvalidRequest(
            f"model {model!r}: compile cannot be combined with step_cache={runtime.step_cache!r} (the cache "
            "decides per step whether to run the blocks, which breaks the compiled graph); pick one",
            param="compile",
        )


class Speedups:
    """The speed options applied to one pipeline, and what each call must do for them."""

    def __init__(self, pipeline: Any, cache_config: Callable[[int], Any] | None) -> None:
        self._pipeline = pipeline
        self._cache_config = cache_config
        self._cache_steps: int | None = None

    @property
    def step_cache(self) -> bool:
        """Whether each call runs with a step cache on the transformer."""
        return self._cache_config is not None

    @contextlib.contextmanager
    def run(self, steps: int, pipeline: Any = None) -> Iterator[None]:
        """Around one call of ``pipeline`` (default: the loaded one; an inpainting pipeline over its
        modules shares the transformer) that runs ``steps`` steps: a fresh cache state, in a cache context."""
        if self._cache_config is None:
            yield
            return
        transformer = self._pipeline.transformer
        if transformer.is_cache_enabled:
            transformer.disable_cache()  # drops any state a canceled call left behind
        transformer.enable_cache(self._cache_config(steps))
        called = self._pipeline if pipeline is None else pipeline
        needs_context = type(called).__name__ in _NO_CACHE_CONTEXT
        context = transformer.cache_context("cond") if needs_context else contextlib.nullcontext()
        with context:
            yield


def apply_speed_options(
    pipeline: Any,
    model: str,
    runtime: ModelRuntime,
    calibration: CalibrationCall,
    tuning: CacheTuning | None = None,
) -> Speedups:
    """Switch on ``runtime``'s attention backend, step cache and compile on a loaded pipeline."""
    class_name = type(pipeline).__name__
    check_speed_options(class_name, model, runtime)
    tuning = tuning or CacheTuning()
    if runtime.attention is not None:
        set_attention_backend(pipeline.transformer, pipeline._execution_device, model, runtime.attention)
    cache_config = None
    if runtime.step_cache != "none":
        cache_config = _cache_configs(pipeline, runtime.step_cache, calibration, tuning)
    if runtime.compile:
        pipeline.transformer.compile_repeated_blocks(fullgraph=True)
    return Speedups(pipeline, cache_config)


def _cache_configs(pipeline: Any, kind: StepCache, calibration: CalibrationCall, tuning: CacheTuning) -> Any:
    """A function from a call's step count to the hook's config (MagCache needs the count)."""
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    if kind == "first-block":
        return lambda steps: FirstBlockCacheConfig(threshold=tuning.first_block_threshold)
    if kind == "taylorseer":
        factors_dtype = pipeline.transformer.dtype
        return lambda steps: TaylorSeerCacheConfig(
            cache_interval=tuning.taylorseer_interval,
            disable_cache_before_step=tuning.taylorseer_full_steps_first,
            taylor_factors_dtype=factors_dtype,
        )
    ratios = _published_ratios(pipeline)
    if ratios is None:
        ratios = calibrate_magnitude_ratios(pipeline, calibration, tuning.calibration_size)
    return lambda steps: MagCacheConfig(
        threshold=tuning.magcache_threshold,
        max_skip_steps=tuning.magcache_max_skip_steps,
        retention_ratio=tuning.magcache_retention,
        num_inference_steps=steps,
        mag_ratios=list(ratios),
    )


def _published_ratios(pipeline: Any) -> list[float] | None:
    """diffusers' magnitude ratios for FLUX.1 (dev and schnell); none exist for FLUX.2."""
    if type(pipeline).__name__ != "FluxPipeline":
        return None
    from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

    return [float(ratio) for ratio in FLUX_MAG_RATIOS]


def calibrate_magnitude_ratios(pipeline: Any, calibration: CalibrationCall, size: int) -> list[float]:
    """MagCache's per-step magnitude ratios for this checkpoint, from one full generation.

    The same measure as diffusers' calibration mode: the residual of the blocks (last block's
    image tokens minus the first block's input) at each step, and the mean over tokens of the
    ratio of its norm to the previous step's. With guidance (two transformer calls a step) only
    the conditional call counts, as MagCache's "cond" state does.
    """
    import torch

    transformer = pipeline.transformer
    head, tail = transformer.transformer_blocks[0], transformer.single_transformer_blocks[-1]
    inputs: list[Any] = []
    residuals: list[Any] = []

    def keep_input(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    def keep_residual(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        hidden = output[1] if isinstance(output, tuple) else output
        image_input = inputs[-1]
        residuals.append((hidden[:, -image_input.shape[1] :] - image_input).float())

    handles = [
        head.register_forward_pre_hook(keep_input, with_kwargs=True),
        tail.register_forward_hook(keep_residual, with_kwargs=True),
    ]
    try:
        pipeline(
            prompt=_CALIBRATION_PROMPT,
            width=size,
            height=size,
            num_inference_steps=calibration.steps,
            guidance_scale=calibration.guidance_scale,
            generator=torch.Generator(device="cpu").manual_seed(0),
            output_type="latent",
        )
    finally:
        for handle in handles:
            handle.remove()
    per_step = max(1, len(residuals) // calibration.steps)
    conditional = residuals[::per_step]
    ratios = [1.0]
    for previous, current in itertools.pairwise(conditional):
        norms = torch.linalg.norm(current, dim=-1) / (torch.linalg.norm(previous, dim=-1) + 1e-8)
        ratios.append(float(norms.mean()))
    return ratios


def set_attention_backend(transformer: Any, device: Any, model: str, backend: str) -> None:
    """Use diffusers' attention ``backend``, once a small attention through it works on ``device``."""
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    known = sorted(name.value for name in AttentionBackendName if not name.value.startswith("_"))
    if backend.lower() not in {name.value for name in AttentionBackendName}:
        raise InvalidRequest(
            f"model {model!r}: attention backend {backend!r} is not one diffusers knows; use one of {', '.join(known)}",
            param="attention",
        )
    import torch

    try:  # the probe first: a backend that fails leaves the model (and diffusers' default) as it was
        probe = torch.zeros(1, 8, 2, 16, device=device, dtype=transformer.dtype)
        dispatch_attention_fn(probe, probe, probe, backend=AttentionBackendName(backend.lower()))
        transformer.set_attention_backend(backend)
    except Exception as error:
        raise InvalidRequest(
            f"model {model!r}: attention backend {backend!r} cannot run on {device} "
            f"({transformer.dtype}) here: {error}. 'native' (PyTorch SDPA) works everywhere",
            param="attention",
        ) from None
