"""Cheap live previews: a small RGB picture straight from the latents, without the VAE.

A FLUX latent is close to a linear function of the colours it decodes to, so projecting each
latent pixel's channels onto RGB with a fixed matrix (the "latent to RGB factors" that image
UIs use for live previews) gives a blurry but recognisable picture for the cost of one tiny
matrix product. Only a ``(h, w, 3)`` byte array leaves the device.

The preview is at latent resolution: one pixel per latent pixel, that is width/8 x height/8 of
the output image for every FLUX family (128x128 for a 1024x1024 image). It is not upscaled:
a client can scale it up as it likes for no server cost.

Inside the denoising loop the pipelines hold the latents as a sequence of tokens, one per 2x2
patch of latent pixels, each token carrying ``4 * C`` values ordered channel first, then patch
row, then patch column. FLUX.1 (``FluxPipeline._pack_latents``) and FLUX.2
(``Flux2Pipeline._patchify_latents`` + ``_pack_latents``, with position ids laid out row by
row) both use that layout, so :func:`unpack_tokens` serves both. FLUX.2 tokens are also
normalised by the VAE's batch-norm statistics; its factors below are fitted to that normalised
space (ComfyUI applies them to the same tensor), so no de-normalisation is needed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class LatentRGBFactors:
    """A linear map from ``C`` latent channels to RGB in ``[-1, 1]``: ``rgb = latent @ weights + bias``."""

    name: str
    weights: tuple[tuple[float, float, float], ...]
    """One row per latent channel: its contribution to R, G and B."""
    bias: tuple[float, float, float]

    @property
    def channels(self) -> int:
        return len(self.weights)


# The factors below are published numbers, taken from ComfyUI's ``comfy/latent_formats.py``
# (classes ``Flux`` and ``Flux2``): only the fitted constants are taken, the code here is our
# own. They apply to the latents as the transformer sees them: for FLUX.1 after the VAE's
# shift and scale, for FLUX.2 after batch-norm, unpatchified to 32 channels.

FLUX1_FACTORS = LatentRGBFactors(
    name="flux.1",
    weights=(
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    bias=(-0.0329, -0.0718, -0.0851),
)

FLUX2_FACTORS = LatentRGBFactors(
    name="flux.2",
    weights=(
        (0.0058, 0.0113, 0.0073),
        (0.0495, 0.0443, 0.0836),
        (-0.0099, 0.0096, 0.0644),
        (0.2144, 0.3009, 0.3652),
        (0.0166, -0.0039, -0.0054),
        (0.0157, 0.0103, -0.0160),
        (-0.0398, 0.0902, -0.0235),
        (-0.0052, 0.0095, 0.0109),
        (-0.3527, -0.2712, -0.1666),
        (-0.0301, -0.0356, -0.0180),
        (-0.0107, 0.0078, 0.0013),
        (0.0746, 0.0090, -0.0941),
        (0.0156, 0.0169, 0.0070),
        (-0.0034, -0.0040, -0.0114),
        (0.0032, 0.0181, 0.0080),
        (-0.0939, -0.0008, 0.0186),
        (0.0018, 0.0043, 0.0104),
        (0.0284, 0.0056, -0.0127),
        (-0.0024, -0.0022, -0.0030),
        (0.1207, -0.0026, 0.0065),
        (0.0128, 0.0101, 0.0142),
        (0.0137, -0.0072, -0.0007),
        (0.0095, 0.0092, -0.0059),
        (0.0000, -0.0077, -0.0049),
        (-0.0465, -0.0204, -0.0312),
        (0.0095, 0.0012, -0.0066),
        (0.0290, -0.0034, 0.0025),
        (0.0220, 0.0169, -0.0048),
        (-0.0332, -0.0457, -0.0468),
        (-0.0085, 0.0389, 0.0609),
        (-0.0076, 0.0003, -0.0043),
        (-0.0111, -0.0460, -0.0614),
    ),
    # ComfyUI reuses the FLUX.1 bias for FLUX.2.
    bias=(-0.0329, -0.0718, -0.0851),
)


def factors_for_family(family: str) -> LatentRGBFactors:
    """The published factors for a family key (``flux.2-klein``, ``flux.1-dev``, ...)."""
    return FLUX2_FACTORS if family.startswith("flux.2") else FLUX1_FACTORS


def unpack_tokens(tokens: Any, *, width: int, height: int, vae_scale_factor: int = 8) -> Any:
    """One image's packed latent tokens ``(seq, 4 * C)`` as a spatial ``(C, height/8, width/8)`` tensor.

    ``width`` and ``height`` are the output image's; the token grid is ``height/16 x width/16``
    (each token is a 2x2 patch of latent pixels). ``tokens`` is read, never modified.
    """
    patch = 2 * vae_scale_factor
    rows, cols = height // patch, width // patch
    if tokens.ndim != 2 or tokens.shape[0] != rows * cols or tokens.shape[1] % 4:
        raise ValueError(f"latent tokens of shape {tuple(tokens.shape)} do not fit a {width}x{height} image")
    channels = tokens.shape[1] // 4
    # (rows, cols, C, 2, 2) -> (C, rows, 2, cols, 2) -> (C, 2 * rows, 2 * cols)
    spatial = tokens.reshape(rows, cols, channels, 2, 2).permute(2, 0, 3, 1, 4)
    return spatial.reshape(channels, 2 * rows, 2 * cols)


@functools.lru_cache(maxsize=16)
def _factor_tensors(factors: LatentRGBFactors, device: Any) -> tuple[Any, Any]:
    import torch

    weights = torch.tensor(factors.weights, dtype=torch.float32, device=device)
    bias = torch.tensor(factors.bias, dtype=torch.float32, device=device)
    return weights, bias


def latents_to_rgb(latents: Any, factors: LatentRGBFactors | None = None) -> Image.Image:
    """A ``(C, h, w)`` latent tensor as a ``w x h`` RGB image, computed on the tensor's device.

    With ``factors`` for exactly ``C`` channels: the linear projection, mapped from ``[-1, 1]``
    to ``0..255`` and clipped. Otherwise (no factors, or a channel count they do not fit, such
    as the 4-channel tiny test models): a generic view that still shows structure, the first
    three channels as R, G and B (repeated when there are fewer), each stretched from its own
    minimum to its own maximum. The input is never modified.
    """
    import torch

    if latents.ndim != 3:
        raise ValueError(f"expected latents of shape (C, h, w), got {tuple(latents.shape)}")
    with torch.no_grad():
        # nan_to_num makes a new float32 tensor; only out-of-place operations follow.
        x = torch.nan_to_num(latents.to(torch.float32))
        if factors is not None and factors.channels == x.shape[0]:
            weights, bias = _factor_tensors(factors, x.device)
            rgb = torch.einsum("chw,cr->hwr", x, weights) + bias
            pixels = ((rgb + 1.0) * 127.5).clamp(0.0, 255.0)
        else:
            picked = x[[i % x.shape[0] for i in range(3)]]
            low = picked.amin(dim=(1, 2), keepdim=True)
            span = (picked.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-12)
            pixels = ((picked - low) / span * 255.0).permute(1, 2, 0)
        array = pixels.round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(array)


def preview_from_tokens(tokens: Any, *, family: str, width: int, height: int, vae_scale_factor: int = 8) -> Image.Image:
    """One image's packed latent tokens, as the denoising loop holds them, as a preview picture."""
    spatial = unpack_tokens(tokens, width=width, height=height, vae_scale_factor=vae_scale_factor)
    return latents_to_rgb(spatial, factors_for_family(family))
