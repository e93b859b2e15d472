"""Live previews decoded from the latents: the projection itself, the unpacking, and the engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import Flux2Pipeline, FluxPipeline
from PIL import Image

from fluxserve.engines.base import GenerationRequest, Progress
from fluxserve.engines.catalog import FAMILIES
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.validation import validate
from fluxserve.imaging.preview import (
    FLUX1_FACTORS,
    FLUX2_FACTORS,
    factors_for_family,
    latents_to_rgb,
    preview_from_tokens,
    unpack_tokens,
)
from tests.conftest import TINY

WIDTH, HEIGHT = 256, 192


def pixels(image: Image.Image) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.asarray(image)


def expected_projection(latents: torch.Tensor, factors: Any) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The documented mapping, computed independently in float64 with numpy."""
    x = latents.double().numpy().transpose(1, 2, 0)
    rgb = x @ np.array(factors.weights, dtype=np.float64) + np.array(factors.bias, dtype=np.float64)
    return np.clip(np.rint((rgb + 1.0) * 127.5), 0, 255).astype(np.uint8)


# --- the projection --------------------------------------------------------------------------


def test_published_factors_have_one_rgb_row_per_latent_channel() -> None:
    assert FLUX1_FACTORS.channels == 16
    assert FLUX2_FACTORS.channels == 32
    for factors in (FLUX1_FACTORS, FLUX2_FACTORS):
        assert all(len(row) == 3 for row in factors.weights)
        assert len(factors.bias) == 3


def test_each_family_has_its_factors() -> None:
    assert {key: factors_for_family(key).name for key in FAMILIES} == {
        "flux.2-klein": "flux.2",
        "flux.2-klein-base": "flux.2",
        "flux.2-dev": "flux.2",
        "flux.1-dev": "flux.1",
        "flux.1-schnell": "flux.1",
    }


def test_a_zero_latent_shows_the_bias_colour() -> None:
    image = latents_to_rgb(torch.zeros(16, 3, 5), FLUX1_FACTORS)
    assert image.mode == "RGB"
    assert image.size == (5, 3)
    # (bias + 1) * 127.5, rounded: (-0.0329, -0.0718, -0.0851) -> (123.3, 118.3, 116.6)
    assert set(map(tuple, pixels(image).reshape(-1, 3).tolist())) == {(123, 118, 117)}


@pytest.mark.parametrize("factors", [FLUX1_FACTORS, FLUX2_FACTORS], ids=lambda f: f.name)
def test_known_factors_project_each_latent_pixel_linearly(factors: Any) -> None:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(factors.channels, 6, 10, generator=generator) * 3
    image = latents_to_rgb(latents, factors)
    assert image.size == (10, 6)
    got, want = pixels(image).astype(int), expected_projection(latents, factors).astype(int)
    assert np.abs(got - want).max() <= 1  # float32 on the device vs float64 here: rounding only
    assert (got == want).mean() > 0.99


def test_one_channel_drives_the_colour_by_its_factor_row() -> None:
    latents = torch.zeros(32, 1, 2)
    latents[3, 0, 0] = 2.0  # FLUX.2 channel 3 is (0.2144, 0.3009, 0.3652): brightens every colour
    latents[8, 0, 1] = 2.0  # channel 8 is (-0.3527, -0.2712, -0.1666): darkens
    left, right = pixels(latents_to_rgb(latents, FLUX2_FACTORS))[0].tolist()
    bias = np.array(FLUX2_FACTORS.bias)
    assert left == np.rint((bias + 2 * np.array([0.2144, 0.3009, 0.3652]) + 1) * 127.5).astype(int).tolist()
    assert right == np.rint((bias + 2 * np.array([-0.3527, -0.2712, -0.1666]) + 1) * 127.5).astype(int).tolist()


def test_the_projection_is_clipped_to_the_byte_range() -> None:
    bright = latents_to_rgb(torch.full((32, 2, 2), 0.0).index_fill(0, torch.tensor([3]), 100.0), FLUX2_FACTORS)
    dark = latents_to_rgb(torch.full((32, 2, 2), 0.0).index_fill(0, torch.tensor([3]), -100.0), FLUX2_FACTORS)
    assert set(pixels(bright).ravel().tolist()) == {255}
    assert set(pixels(dark).ravel().tolist()) == {0}


def test_the_fallback_stretches_each_of_the_first_three_channels_to_0_255() -> None:
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(4, 8, 12, generator=generator)
    latents[1] = latents[1] * 50 + 7  # the scale and offset of a channel do not matter
    image = latents_to_rgb(latents)
    assert image.mode == "RGB"
    assert image.size == (12, 8)
    array = pixels(image)
    for channel in range(3):
        assert array[..., channel].min() == 0
        assert array[..., channel].max() == 255
        source = latents[channel].numpy()
        stretched = (source - source.min()) / (source.max() - source.min()) * 255
        assert np.abs(array[..., channel].astype(float) - stretched).max() <= 0.5 + 1e-3


def test_the_fallback_is_used_when_the_factors_do_not_fit_the_channels() -> None:
    latents = torch.randn(4, 8, 12, generator=torch.Generator().manual_seed(2))
    assert pixels(latents_to_rgb(latents, FLUX1_FACTORS)).tobytes() == pixels(latents_to_rgb(latents)).tobytes()


def test_the_fallback_handles_few_channels_and_flat_ones() -> None:
    grey = pixels(latents_to_rgb(torch.arange(6.0).reshape(1, 2, 3)))
    assert (grey[..., 0] == grey[..., 1]).all()
    assert (grey[..., 0] == grey[..., 2]).all()
    assert grey[..., 0].ravel().tolist() == [0, 51, 102, 153, 204, 255]
    flat = pixels(latents_to_rgb(torch.full((3, 2, 2), 5.0)))
    assert set(flat.ravel().tolist()) == {0}


def test_nan_and_infinite_latents_still_give_a_picture() -> None:
    latents = torch.zeros(16, 2, 2)
    latents[0, 0, 0] = float("nan")
    latents[1, 1, 1] = float("inf")
    assert latents_to_rgb(latents, FLUX1_FACTORS).size == (2, 2)
    assert latents_to_rgb(latents[:4]).size == (2, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_input_is_never_modified(dtype: torch.dtype) -> None:
    for channels, factors in ((16, FLUX1_FACTORS), (4, None)):
        latents = (torch.randn(channels, 4, 4, generator=torch.Generator().manual_seed(3)) * 4).to(dtype)
        before = latents.clone()
        latents_to_rgb(latents, factors)
        assert torch.equal(latents, before)


def test_latents_must_be_three_dimensional() -> None:
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        latents_to_rgb(torch.zeros(1, 16, 2, 2))


# --- unpacking the pipelines' tokens ---------------------------------------------------------


def spatial(channels: int, seed: int = 4) -> torch.Tensor:
    return torch.randn(1, channels, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(seed))


def test_flux1_tokens_unpack_as_the_pipeline_unpacks_them() -> None:
    latents = spatial(16)
    tokens = FluxPipeline._pack_latents(latents, 1, 16, HEIGHT // 8, WIDTH // 8)
    assert torch.equal(FluxPipeline._unpack_latents(tokens, HEIGHT, WIDTH, 8), latents)  # the layout we mirror
    assert torch.equal(unpack_tokens(tokens[0], width=WIDTH, height=HEIGHT), latents[0])


def test_flux2_tokens_unpack_as_the_pipeline_unpacks_them() -> None:
    latents = spatial(32)
    patched = Flux2Pipeline._patchify_latents(latents)
    tokens = Flux2Pipeline._pack_latents(patched)
    ids = Flux2Pipeline._prepare_latent_ids(patched)
    theirs = Flux2Pipeline._unpatchify_latents(Flux2Pipeline._unpack_latents_with_ids(tokens, ids))
    assert torch.equal(theirs, latents)
    assert torch.equal(unpack_tokens(tokens[0], width=WIDTH, height=HEIGHT), latents[0])


def test_unpacking_checks_the_shape() -> None:
    tokens = torch.randn((HEIGHT // 16) * (WIDTH // 16), 64)
    with pytest.raises(ValueError, match="do not fit a 256x256 image"):
        unpack_tokens(tokens, width=WIDTH, height=WIDTH)


def test_a_preview_from_tokens_is_at_latent_resolution() -> None:
    tokens = torch.randn((1024 // 16) ** 2, 128)
    image = preview_from_tokens(tokens, family="flux.2-klein", width=1024, height=1024)
    assert image.size == (128, 128)
    assert image.mode == "RGB"


# --- the engine ------------------------------------------------------------------------------


def request(engine: DiffusersEngine, **overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "width": WIDTH,
        "height": HEIGHT,
        "seed": 5,
        "steps": None if engine.capabilities.fixed_steps else 3,
    }
    fields.update(overrides)
    return GenerationRequest(**fields)


def generate_with_previews(engine: DiffusersEngine, req: GenerationRequest) -> tuple[Any, list[Image.Image]]:
    previews: list[Image.Image] = []

    def take(progress: Progress) -> None:
        assert progress.preview is not None
        previews.append(progress.preview())

    return engine.generate(req, progress=take), previews


@pytest.mark.parametrize("name", TINY)
def test_every_step_offers_a_preview_at_latent_resolution(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine = engines[name]
    result, previews = generate_with_previews(engine, request(engine, n=2))
    assert len(previews) == 2 * result.steps
    for preview in previews:
        assert preview.mode == "RGB"
        assert preview.size == (WIDTH // 8, HEIGHT // 8)


@pytest.mark.parametrize("name", TINY)
def test_taking_previews_does_not_change_the_images(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine = engines[name]
    plain = engine.generate(request(engine, n=2))
    watched, _ = generate_with_previews(engine, request(engine, n=2))
    assert [i.image.tobytes() for i in watched.images] == [i.image.tobytes() for i in plain.images]


@pytest.mark.parametrize("name", TINY)
def test_previews_follow_the_denoising(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine = engines[name]
    _, previews = generate_with_previews(engine, request(engine))
    frames = [p.tobytes() for p in previews]
    assert len(set(frames)) == len(frames)  # every step shows something new
    for preview in previews:
        assert len(set(pixels(preview).ravel().tolist())) > 16  # not a flat picture


def final_latents_in_model_space(engine: DiffusersEngine, req: GenerationRequest) -> torch.Tensor:
    """The run's final latents, straight from the pipeline, as (C, H/8, W/8) in the transformer's space."""
    resolved = validate(req, engine.capabilities)
    assert resolved.seed is not None
    pipe = engine._pipeline
    latents = pipe(**engine.pipeline_arguments(resolved, resolved.seed), output_type="latent").images
    if engine.family.key.startswith("flux.1"):
        return FluxPipeline._unpack_latents(latents, HEIGHT, WIDTH, pipe.vae_scale_factor)[0]
    if latents.ndim == 3:  # FLUX.2 [dev] hands back the packed tokens as they are
        ids = Flux2Pipeline._prepare_latent_ids(torch.empty(1, 1, HEIGHT // 16, WIDTH // 16))
        return Flux2Pipeline._unpatchify_latents(Flux2Pipeline._unpack_latents_with_ids(latents, ids))[0]
    # FLUX.2 [klein] hands back de-normalised, unpatchified latents: undo the batch-norm.
    patched = Flux2Pipeline._patchify_latents(latents)
    mean = pipe.vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(pipe.vae.bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps)
    return Flux2Pipeline._unpatchify_latents((patched - mean) / std)[0]


@pytest.mark.parametrize("name", TINY)
def test_the_last_preview_shows_the_latents_the_vae_decodes(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine = engines[name]
    req = request(engine)
    _, previews = generate_with_previews(engine, req)
    final = final_latents_in_model_space(engine, req)
    expected = latents_to_rgb(final, factors_for_family(engine.family.key))
    difference = np.abs(pixels(previews[-1]).astype(int) - pixels(expected).astype(int))
    assert difference.max() <= 1  # FLUX.2's round trip through the batch-norm rounds a little
