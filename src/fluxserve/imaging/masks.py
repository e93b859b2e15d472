"""Edit masks: read one from what a client sent, and keep the unmasked pixels of the input.

A mask says where an edit may change the first image. Two forms are read:

- with transparency (OpenAI's form): pixels more than half transparent (alpha below 128) change,
  the rest keep the input's pixels;
- without transparency: a plain black-and-white image (every pixel pure black or pure white):
  white changes, black keeps (the convention of diffusers and most inpainting tools).

Anything else (a greyscale photo, a JPEG with soft edges) is refused rather than guessed at, and so
is a mask that marks nothing to change. The result is always mode ``L``: 255 changes, 0 keeps.
"""

from __future__ import annotations

from PIL import Image

from fluxserve.errors import InvalidImage
from fluxserve.imaging.decode import DecodeLimits, load_pixels

CHANGE = 255
KEEP = 0
ALPHA_THRESHOLD = 128
"""Pixels with less alpha than this are transparent: they change."""


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _from_alpha(image: Image.Image) -> Image.Image:
    alpha = image.convert("RGBA").getchannel("A")
    return alpha.point(lambda value: CHANGE if value < ALPHA_THRESHOLD else KEEP)


def _from_black_and_white(image: Image.Image, param: str) -> Image.Image:
    colours = image.convert("RGB").getcolors(maxcolors=2) or []
    plain = {(0, 0, 0), (255, 255, 255)}
    if not colours or any(colour not in plain for _, colour in colours):
        raise InvalidImage(
            f"{param} has no transparency and is not plain black and white; send a PNG whose transparent "
            "pixels mark what to change (or a black-and-white image, white where it changes)",
            param=param,
        )
    return image.convert("L").point(lambda value: CHANGE if value >= 128 else KEEP)


def mask_from_image(image: Image.Image, *, param: str = "mask") -> Image.Image:
    """``image`` read as a mask (see the module docstring): mode L, 255 where the edit may change."""
    mask = _from_alpha(image) if _has_alpha(image) else _from_black_and_white(image, param)
    if mask.getextrema()[1] != CHANGE:
        raise InvalidImage(
            f"{param} marks nothing to change (no transparent pixels); make the area to edit transparent",
            param=param,
        )
    return mask


def decode_mask(
    data: bytes, *, param: str = "mask", limits: DecodeLimits | None = None, size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode and read a mask (the header checked first, like any upload), scaled to ``size`` if given."""
    mask = mask_from_image(load_pixels(data, param=param, limits=limits), param=param)
    return scale_mask(mask, size) if size is not None else mask


def scale_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``mask`` at ``size``, still only 0 and 255 (nearest neighbour keeps it binary)."""
    if mask.size == size:
        return mask
    return mask.resize(size, Image.Resampling.NEAREST)


def keep_unmasked(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """``generated`` where ``mask`` is 255, ``original``'s exact pixels where it is 0 (all the same size)."""
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), mask)
