"""Masked edits and strength in the local engine: the family's inpainting pipeline over the loaded
modules (``Flux2KleinInpaintPipeline`` for klein, ``FluxInpaintPipeline`` for FLUX.1).

What is guaranteed, and tested here for both families: outside the mask the output holds the first
image's exact pixels (at every strength; the pipeline itself keeps only the latents there, and the
VAE does not give those back exactly, so the engine puts the input's pixels back); strength 0
returns the first image unchanged; the inpainting pipeline shares every module with the
text-to-image one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from fluxserve.engines.base import GenerationRequest, Progress
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.runtime import ModelRuntime, StepCache
from fluxserve.engines.validation import denoising_steps, validate
from fluxserve.errors import InvalidImage, InvalidRequest
from tests.helpers import photo

SIZE = (96, 64)  # multiples of 16: the output is exactly the first image's size
EDITORS = {
    "tiny-random": "Flux2KleinInpaintPipeline",
    "tiny-random-flux1": "FluxInpaintPipeline",
    "tiny-random-schnell": "FluxInpaintPipeline",
}
"""Tiny models of each family with masked editing, and the pipeline that runs their edits."""


def rgba_mask(size: tuple[int, int] = SIZE, box: tuple[int, int, int, int] = (16, 16, 48, 48)) -> Image.Image:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)
    return mask


def changed(box: tuple[int, int, int, int] = (16, 16, 48, 48)) -> np.ndarray:
    inside = np.zeros((SIZE[1], SIZE[0]), dtype=bool)
    inside[box[1] : box[3], box[0] : box[2]] = True
    return inside


def masked_edit(engine: DiffusersEngine, strength: float | None, **extra: object) -> Image.Image:
    request = GenerationRequest(
        "a red ball", references=[photo(*SIZE)], mask=rgba_mask(), strength=strength, steps=4, seed=3
    )
    return engine.generate(request, **extra).images[0].image  # type: ignore[arg-type]


@pytest.fixture(params=list(EDITORS))
def editor(request: pytest.FixtureRequest, engines: dict[str, DiffusersEngine]) -> DiffusersEngine:
    """Each tiny model with masked editing: klein, FLUX.1 [dev] and FLUX.1 [schnell]."""
    return engines[request.param]


def test_the_inpainting_pipeline_shares_every_module(editor: DiffusersEngine) -> None:
    inpaint = editor.image_to_image_pipeline()
    loaded = editor._pipeline
    assert type(inpaint).__name__ == EDITORS[editor.model]
    assert inpaint.transformer is loaded.transformer
    shared = [name for name, module in inpaint.components.items() if name != "scheduler" and module is not None]
    assert {"transformer", "vae", "text_encoder", "tokenizer"} <= set(shared)
    for name in shared:
        assert getattr(inpaint, name) is getattr(loaded, name), name
    parameters = {id(p) for c in inpaint.components.values() if hasattr(c, "parameters") for p in c.parameters()}
    loaded_parameters = {id(p) for c in loaded.components.values() if hasattr(c, "parameters") for p in c.parameters()}
    assert parameters <= loaded_parameters  # not one parameter of its own
    assert inpaint.scheduler is not loaded.scheduler  # per-call state stays apart
    assert editor.image_to_image_pipeline() is inpaint  # built once


def test_flux1_inpainting_shares_both_text_encoders(engines: dict[str, DiffusersEngine]) -> None:
    flux1 = engines["tiny-random-flux1"]
    inpaint = flux1.image_to_image_pipeline()
    for name in ("text_encoder_2", "tokenizer_2"):
        assert getattr(inpaint, name) is getattr(flux1._pipeline, name)


@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0])
def test_outside_the_mask_the_first_image_is_kept_exactly(editor: DiffusersEngine, strength: float) -> None:
    out = np.asarray(masked_edit(editor, strength))
    source = np.asarray(photo(*SIZE))
    inside = changed()
    assert out.shape == source.shape
    assert (out[~inside] == source[~inside]).all()
    if strength == 0:
        assert (out == source).all()  # nothing may move at all
    else:
        assert (out[inside] != source[inside]).any()


def test_strength_sets_how_many_steps_run(editor: DiffusersEngine) -> None:
    seen: list[Progress] = []
    masked_edit(editor, 0.5, progress=seen.append)
    assert [p.step for p in seen] == [1, 2]
    assert {p.total_steps for p in seen} == {2}
    assert denoising_steps(4, 0.5) == 2
    assert denoising_steps(4, 1.0) == 4
    assert denoising_steps(4, 0.0) == 0
    assert denoising_steps(4, None) == 4


@pytest.mark.parametrize("strength", [0.3, 0.5, 0.75])
def test_progress_counts_the_steps_the_pipeline_runs(editor: DiffusersEngine, strength: float) -> None:
    """Progress goes 1..total over the transformer calls actually made, for two images in a row."""
    steps = 4 if editor.capabilities.fixed_steps else min(10, editor.capabilities.max_steps)
    calls: list[int] = []
    hook = editor._pipeline.transformer.register_forward_hook(lambda *_: calls.append(1))
    seen: list[Progress] = []
    request = GenerationRequest(
        "a red ball", references=[photo(*SIZE)], mask=rgba_mask(), strength=strength, steps=steps, seed=3, n=2
    )
    try:
        editor.generate(request, progress=seen.append)
    finally:
        hook.remove()
    assert len(calls) == 2 * denoising_steps(steps, strength) < 2 * steps
    assert [p.step for p in seen] == list(range(1, len(calls) + 1))
    assert {p.total_steps for p in seen} == {len(calls)}
    assert [p.image_index for p in seen] == [0] * (len(calls) // 2) + [1] * (len(calls) // 2)


def test_a_strength_too_small_for_one_step_returns_the_image(editor: DiffusersEngine) -> None:
    """4 steps at strength 1e-17: diffusers' own rounding leaves no step to run (its pipelines raise)."""
    assert denoising_steps(4, 1e-17) == 0
    seen: list[Progress] = []
    out = masked_edit(editor, 1e-17, progress=seen.append)
    assert out.tobytes() == photo(*SIZE).tobytes()
    assert seen == []


def test_a_masked_edit_reproduces_and_leaves_text_to_image_unchanged(editor: DiffusersEngine) -> None:
    plain = GenerationRequest("a lighthouse", width=64, height=64, steps=4, seed=1)
    before = editor.generate(plain).images[0].image.tobytes()
    first = masked_edit(editor, 0.8).tobytes()
    assert masked_edit(editor, 0.8).tobytes() == first
    assert editor.generate(plain).images[0].image.tobytes() == before


def test_flux1_takes_one_image_to_edit_and_no_references(engines: dict[str, DiffusersEngine]) -> None:
    caps = engines["tiny-random-flux1"].capabilities
    image = photo(*SIZE)
    with pytest.raises(InvalidRequest, match="or send a mask or strength") as plain:
        validate(GenerationRequest("a", references=[image]), caps)
    assert plain.value.param == "image"
    with pytest.raises(InvalidRequest, match="edits one image and takes no reference images") as two:
        validate(GenerationRequest("a", references=[image, image], mask=rgba_mask()), caps)
    assert two.value.param == "image"
    assert validate(GenerationRequest("a", references=[image], strength=0.5), caps).references[0].size == SIZE


def test_strength_without_a_mask_edits_the_whole_image_at_its_size(klein: DiffusersEngine) -> None:
    references = [photo(100, 70), photo(64, 64, seed=5)]  # the second conditions; the first is the start
    result = klein.generate(GenerationRequest("a cat", references=references, strength=0.6, seed=2))
    assert (result.width, result.height) == (96, 64)  # rounded down to multiples of 16
    assert result.images[0].image.size == (96, 64)
    assert result.strength == 0.6
    assert not result.mask


def test_the_result_says_a_mask_was_used(klein: DiffusersEngine) -> None:
    request = GenerationRequest("a cat", references=[photo(*SIZE)], mask=rgba_mask(), seed=1)
    result = klein.generate(request)
    assert result.mask
    assert result.strength == 1.0


def test_validation_refusals(klein: DiffusersEngine, engines: dict[str, DiffusersEngine]) -> None:
    caps = klein.capabilities
    image = photo(*SIZE)
    cases: list[tuple[GenerationRequest, str, str]] = [
        (GenerationRequest("a", mask=rgba_mask()), "mask", "needs an image"),
        (GenerationRequest("a", references=[image], strength=1.5), "strength", "outside 0-1"),
        (GenerationRequest("a", references=[image], strength=float("nan")), "strength", "number"),
        (GenerationRequest("a", width=64, height=64, strength=0.5), "strength", "needs an image"),
        (GenerationRequest("a", references=[image], mask=rgba_mask((64, 64))), "mask", "size of the first image"),
        (GenerationRequest("a", references=[image], mask=Image.new("RGBA", SIZE, "black")), "mask", "nothing"),
        (GenerationRequest("a", references=[image], mask=rgba_mask(), width=64, height=64), "size", "96x64"),
    ]
    for request, param, words in cases:
        with pytest.raises((InvalidRequest, InvalidImage), match=words) as caught:
            validate(request, caps)
        assert caught.value.param == param
    other = engines["tiny-random-dev"].capabilities
    assert not other.masks
    with pytest.raises(InvalidRequest, match="takes no mask") as refused:
        validate(GenerationRequest("a", references=[image], mask=rgba_mask()), other)
    assert refused.value.param == "mask"
    for name in ("tiny-random-base", "tiny-random-flux1", "tiny-random-schnell"):
        assert engines[name].capabilities.masks


def test_a_resolved_masked_request_validates_again_unchanged(klein: DiffusersEngine) -> None:
    resolved = validate(
        GenerationRequest("a", references=[photo(100, 70)], mask=rgba_mask((100, 70))), klein.capabilities
    )
    assert resolved.references[0].size == (96, 64)
    assert resolved.mask is not None
    assert resolved.mask.size == (96, 64)
    again = validate(resolved, klein.capabilities)
    assert again.mask is not None
    assert again.mask.tobytes() == resolved.mask.tobytes()
    assert again.references[0].tobytes() == resolved.references[0].tobytes()


@pytest.mark.parametrize("cache", ["first-block", "taylorseer"])
def test_a_flux1_masked_edit_runs_with_a_step_cache(options: EngineOptions, cache: StepCache) -> None:
    """FluxInpaintPipeline calls the transformer outside a cache context: the engine opens one."""
    runtime = ModelRuntime(step_cache=cache, prompt_cache_mb=0)
    engine = DiffusersEngine("tiny-random-flux1", replace(options, runtime=runtime))
    engine.load()
    out = np.asarray(masked_edit(engine, 0.8))
    source = np.asarray(photo(*SIZE))
    assert (out[~changed()] == source[~changed()]).all()
    assert (out[changed()] != source[changed()]).any()
    assert (np.asarray(masked_edit(engine, 0.8)) == out).all()
