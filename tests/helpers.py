"""Small helpers shared by the tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic test picture with smooth areas and detail, unlike flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / 37 + y / 53), np.cos(y / 29), np.sin((x + y) / 61)], axis=-1) * 100 + 128
    pixels = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)
