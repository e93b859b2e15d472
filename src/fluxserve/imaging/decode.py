"""Decode untrusted image bytes (reference images) safely.

Only PNG, JPEG, WebP and GIF (first frame) are accepted. The pixel count is checked from the
header before any pixel is decoded, so a decompression bomb is refused without being
expanded; a truncated or corrupt file is an error, never a partial image. EXIF orientation is
applied and the result is 8-bit RGB (transparency composited on white).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from fluxserve.errors import InvalidImage

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000


def _identify(data: bytes) -> str | None:
    """The format Pillow recognises, if any, without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            return probe.format
    except Exception:
        return None


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def decode_image(data: bytes, *, param: str = "image", limits: DecodeLimits | None = None) -> Image.Image:
    """Decode ``data`` into an RGB image, or raise :class:`InvalidImage` naming ``param``."""
    limits = limits or DecodeLimits()
    if not data:
        raise InvalidImage(f"{param} is empty", param=param)
    if len(data) > limits.max_bytes:
        raise InvalidImage(
            f"{param} is {len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.0f} MB", param=param
        )
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning would fire before our clearer check below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise InvalidImage(
            f"{param} has too many pixels; the limit is {limits.max_pixels / 1e6:.0f} megapixels", param=param
        ) from None
    except UnidentifiedImageError:
        found = _identify(data)
        if found is None:
            raise InvalidImage(f"{param} is not an image (send PNG, JPEG or WebP)", param=param) from None
        raise InvalidImage(f"{param} is {found}, which is not supported; send PNG, JPEG or WebP", param=param) from None
    except (OSError, SyntaxError, ValueError, struct.error) as error:
        raise InvalidImage(
            f"{param} could not be read ({error}); it may be truncated or corrupt", param=param
        ) from None
    with image:
        width, height = image.size
        if width * height > limits.max_pixels:
            raise InvalidImage(
                f"{param} is {width}x{height} ({width * height / 1e6:.0f} megapixels); the limit is "
                f"{limits.max_pixels / 1e6:.0f} megapixels",
                param=param,
            )
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            return _flatten(oriented)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise InvalidImage(
                f"{param} could not be decoded ({error}); it may be truncated or corrupt", param=param
            ) from None
