"""Masked edits and strength in the local engine: klein's inpainting pipeline over the loaded modules.

What is guaranteed, and tested here: outside the mask the output holds the first image's exact pixels
(at every strength; the pipeline itself keeps only the latents there, and the VAE does not give
those back exactly, so the engine puts the input's pixels back); strength 0 returns the first image
unchanged; the inpainting pipeline shares every module with the text-to-image one.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fluxserve.engines.base import GenerationRequest, Progress
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.validation import denoising_steps, validate
from fluxserve.errors import InvalidImage, InvalidRequest
from tests.helpers import photo

SIZE = (96, 64)  # multiples of 16: the output is exactly the first image's size


def rgba_mask(size: tuple[int, int] = SIZE, box: tuple[int, int, int, int] = (16, 16, 48, 48)) -> Image.Image:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)
    return mask


def changed(box: tuple[int, int, int, int] = (16, 16, 48, 48)) -> np.ndarray:
    inside = np.zeros((SIZE[1], SIZE[0]), dtype=bool)
    inside[box[1] : box[3], box[0] : box[2]] = True
    return inside


def masked_edit(engine: DiffusersEngine, strength: float | None, **extra: object) -> Image.Image:
    request = GenerationRequest("a red ball", references=[photo(*SIZE)], mask=rgba_mask(), strength=strength, seed=3)
    return engine.generate(request, **extra).images[0].image  # type: ignore[arg-type]


def test_the_inpainting_pipeline_shares_every_module(klein: DiffusersEngine) -> None:
    inpaint = klein.image_to_image_pipeline()
    loaded = klein._pipeline
    assert type(inpaint).__name__ == "Flux2KleinInpaintPipeline"
    for name in ("transformer", "vae", "text_encoder", "tokenizer"):
        assert getattr(inpaint, name) is getattr(loaded, name)
    parameters = {id(p) for name in ("transformer", "vae", "text_encoder") for p in getattr(inpaint, name).parameters()}
    loaded_parameters = {id(p) for c in loaded.components.values() if hasattr(c, "parameters") for p in c.parameters()}
    assert parameters <= loaded_parameters  # not one parameter of its own
    assert inpaint.scheduler is not loaded.scheduler  # per-call state stays apart
    assert klein.image_to_image_pipeline() is inpaint  # built once


@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0])
def test_outside_the_mask_the_first_image_is_kept_exactly(klein: DiffusersEngine, strength: float) -> None:
    out = np.asarray(masked_edit(klein, strength))
    source = np.asarray(photo(*SIZE))
    inside = changed()
    assert out.shape == source.shape
    assert (out[~inside] == source[~inside]).all()
    if strength == 0:
        assert (out == source).all()  # nothing may move at all
    else:
        assert (out[inside] != source[inside]).any()


def test_strength_sets_how_many_steps_run(klein: DiffusersEngine) -> None:
    seen: list[Progress] = []
    masked_edit(klein, 0.5, progress=seen.append)
    assert [p.step for p in seen] == [1, 2]
    assert {p.total_steps for p in seen} == {2}
    assert denoising_steps(4, 0.5) == 2
    assert denoising_steps(4, 1.0) == 4
    assert denoising_steps(4, 0.0) == 0
    assert denoising_steps(4, None) == 4


def test_a_masked_edit_reproduces_and_leaves_text_to_image_unchanged(klein: DiffusersEngine) -> None:
    plain = GenerationRequest("a lighthouse", width=64, height=64, seed=1)
    before = klein.generate(plain).images[0].image.tobytes()
    first = masked_edit(klein, 0.8).tobytes()
    assert masked_edit(klein, 0.8).tobytes() == first
    assert klein.generate(plain).images[0].image.tobytes() == before


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
    for name in ("tiny-random-dev", "tiny-random-flux1"):
        other = engines[name].capabilities
        assert not other.masks
        with pytest.raises(InvalidRequest, match="takes no mask") as refused:
            validate(GenerationRequest("a", references=[image], mask=rgba_mask()), other)
        assert refused.value.param == "mask"
    assert engines["tiny-random-base"].capabilities.masks


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
