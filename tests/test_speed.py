"""Step caches, attention backends and regional compile (engines/speed.py) on tiny pipelines.

What each cache does to the work and to the picture, measured by
``test_each_step_cache_skips_work_on_each_family`` (it prints these with ``-s``): calls of the
transformer's linear layers with the cache / without, and the mean absolute pixel difference
(0-255 scale) against no cache on the same seed, 64x64, with the eager thresholds of ``EAGER``
(random weights change a lot from step to step, so diffusers' defaults would rarely skip):

| model (steps) | first-block | taylorseer | magcache |
|---|---|---|---|
| klein (4) | refused | 72/92, 0.03 | 78/92, 0.04 |
| klein base (12, guidance 4) | refused | 432/552, 0.03 | 356/552, 0.27 |
| dev (12) | refused | 240/300, 0.02 | 188/300, 0.25 |
| FLUX.1 dev (12) | 294/360, 0.37 | 294/360, 0.02 | 200/360, 0.21 |

Tiny random models say nothing about a real model's picture quality; they show that each hook
runs on each family, skips work, and changes the image only a little.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from fluxserve.engines.base import GenerationRequest
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.runtime import ModelRuntime, StepCache
from fluxserve.engines.speed import STEP_CACHES_BY_PIPELINE, CacheTuning, CalibrationCall, calibrate_magnitude_ratios
from fluxserve.errors import InvalidRequest

EAGER = CacheTuning(
    first_block_threshold=0.5,
    taylorseer_interval=2,
    taylorseer_full_steps_first=1,
    magcache_threshold=0.5,
    magcache_retention=0.2,
    calibration_size=64,
)
"""Thresholds that skip a lot (random weights change a lot from step to step)."""

PIPELINES = {
    "tiny-random": "Flux2KleinPipeline",
    "tiny-random-base": "Flux2KleinPipeline",
    "tiny-random-dev": "Flux2Pipeline",
    "tiny-random-flux1": "FluxPipeline",
}
CASES = [(name, cache) for name, pipeline in PIPELINES.items() for cache in STEP_CACHES_BY_PIPELINE[pipeline]]


def engine_with(options: EngineOptions, name: str, **runtime: Any) -> DiffusersEngine:
    engine = DiffusersEngine(
        name, replace(options, runtime=ModelRuntime(prompt_cache_mb=0, **runtime)), cache_tuning=EAGER
    )
    engine.load()
    return engine


@contextmanager
def counting_linear_calls(transformer: Any) -> Iterator[list[int]]:
    """Calls of the transformer's linear layers: the work a cache skips (blocks or attention)."""
    calls = [0]
    layers = [module for module in transformer.modules() if isinstance(module, torch.nn.Linear)]
    handles = [layer.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for layer in layers]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def ask(name: str) -> GenerationRequest:
    steps = None if name == "tiny-random" else 12
    guidance = 4.0 if name == "tiny-random-base" else None
    return GenerationRequest("a red fox in snow", width=64, height=64, steps=steps, guidance=guidance, seed=5)


def generate(engine: DiffusersEngine, request: GenerationRequest) -> tuple[np.ndarray, int]:
    with counting_linear_calls(engine._pipeline.transformer) as calls:
        image = engine.generate(request).images[0].image
    return np.asarray(image, dtype=np.int16), calls[0]


@pytest.fixture(scope="module")
def plain(options: EngineOptions) -> dict[str, DiffusersEngine]:
    return {name: engine_with(options, name) for name in PIPELINES}


@pytest.mark.parametrize(("name", "cache"), CASES)
def test_each_step_cache_skips_work_on_each_family(
    plain: dict[str, DiffusersEngine], options: EngineOptions, name: str, cache: StepCache
) -> None:
    request = ask(name)
    expected, full_work = generate(plain[name], request)
    engine = engine_with(options, name, step_cache=cache)
    image, work = generate(engine, request)
    again, work_again = generate(engine, request)
    assert work < full_work
    assert (again == image).all()
    assert work_again == work
    difference = float(np.abs(image - expected).mean())
    print(f"{name} {cache}: {work}/{full_work} linear calls, mean pixel difference {difference:.2f}/255")
    assert image.shape == expected.shape


def test_first_block_cache_is_refused_for_flux2_before_the_weights_load(options: EngineOptions) -> None:
    engine = DiffusersEngine("tiny-random-dev", replace(options, runtime=ModelRuntime(step_cache="first-block")))
    with pytest.raises(InvalidRequest) as refused:
        engine.load()
    message = str(refused.value)
    assert "'tiny-random-dev'" in message
    assert "first-block" in message
    assert "taylorseer, magcache" in message
    assert engine._pipeline is None


def test_compile_with_a_step_cache_is_refused(options: EngineOptions) -> None:
    engine = DiffusersEngine(
        "tiny-random", replace(options, runtime=ModelRuntime(compile=True, step_cache="taylorseer"))
    )
    with pytest.raises(InvalidRequest, match="compile cannot be combined with step_cache='taylorseer'"):
        engine.load()


def test_calibrated_ratios_match_diffusers_own_calibration(
    plain: dict[str, DiffusersEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    from diffusers.hooks import MagCacheConfig

    pipeline = plain["tiny-random"]._pipeline
    ours = calibrate_magnitude_ratios(pipeline, CalibrationCall(steps=4, guidance_scale=1.0), size=64)
    capsys.readouterr()
    pipeline.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=4))
    try:
        pipeline(
            prompt="a photograph of a lighthouse on a rocky coast at sunset, detailed, sharp focus",
            width=64,
            height=64,
            num_inference_steps=4,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        )
    finally:
        pipeline.transformer.disable_cache()
    printed = capsys.readouterr().out
    theirs = [float(value) for value in printed.split("[")[-1].split("]")[0].split(",")]
    assert len(ours) == 4
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_the_native_attention_backend_gives_the_same_image(
    plain: dict[str, DiffusersEngine], options: EngineOptions
) -> None:
    expected, _ = generate(plain["tiny-random"], ask("tiny-random"))
    image, _ = generate(engine_with(options, "tiny-random", attention="native"), ask("tiny-random"))
    assert (image == expected).all()


@pytest.mark.parametrize(
    ("backend", "says"), [("flash", "cannot run on cpu"), ("warp-drive", "not one diffusers knows")]
)
def test_an_attention_backend_that_cannot_run_here_is_refused(options: EngineOptions, backend: str, says: str) -> None:
    engine = DiffusersEngine("tiny-random", replace(options, runtime=ModelRuntime(attention=backend)))
    with pytest.raises(InvalidRequest, match=says) as refused:
        engine.load()
    assert "'tiny-random'" in str(refused.value)
    assert "native" in str(refused.value)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # raised inside inductor
def test_regional_compile_happens_at_load_and_matches_eager_output(
    plain: dict[str, DiffusersEngine], options: EngineOptions
) -> None:
    """One inductor compile on CPU (slow: tens of seconds on two cores), at the warm-up size.

    Tolerance: fused kernels reorder float32 sums, so values differ by rounding only: measured
    about 2e-6 at most on the 0-1 scale. 1e-4 is 25x above that and still 39x below one step of
    an 8-bit pixel (1/255), so the served PNG differs by at most one level anywhere.
    """
    engine = engine_with(options, "tiny-random", compile=True)
    blocks = [*engine._pipeline.transformer.transformer_blocks, *engine._pipeline.transformer.single_transformer_blocks]
    assert all(block._compiled_call_impl is not None for block in blocks)
    request = GenerationRequest("a red fox in snow", width=256, height=256, seed=5)  # the warm-up's size
    resolved_eager = plain["tiny-random"]
    outputs = []
    for which in (resolved_eager, engine):
        from fluxserve.engines.validation import validate

        resolved = validate(request, which.capabilities)
        arguments = which.pipeline_arguments(resolved, resolved.seed)
        outputs.append(which._pipeline(**arguments, output_type="np").images[0])
    assert float(np.abs(outputs[0] - outputs[1]).max()) < 1e-4
