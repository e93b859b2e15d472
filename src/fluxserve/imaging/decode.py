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


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says: its size as displayed (EXIF orientation applied) and format."""

    width: int
    height: int
    format: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


_TRANSPOSED = {5, 6, 7, 8}
"""EXIF orientations that swap width and height."""


def _open(data: bytes, param: str, limits: DecodeLimits) -> Image.Image:
    """Open ``data`` (reading its header, no pixels) and check its size against ``limits``."""
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
    width, height = image.size
    if width * height > limits.max_pixels:
        image.close()
        raise InvalidImage(
            f"{param} is {width}x{height} ({width * height / 1e6:.0f} megapixels); the limit is "
            f"{limits.max_pixels / 1e6:.0f} megapixels",
            param=param,
        )
    return image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block: exif_transpose will ignore it too
        return 1


def probe_image(data: bytes, *, param: str = "image", limits: DecodeLimits | None = None) -> ImageInfo:
    """The size and format of ``data`` from its header alone: no pixel is decoded.

    Raises :class:`InvalidImage` for what :func:`decode_image` would refuse before decoding.
    """
    with _open(data, param, limits or DecodeLimits()) as image:
        width, height = image.size
        if _orientation(image) in _TRANSPOSED:
            width, height = height, width
        return ImageInfo(width, height, str(image.format))


def load_pixels(data: bytes, *, param: str = "image", limits: DecodeLimits | None = None) -> Image.Image:
    """Decode ``data`` in its own mode (alpha kept, no conversion), EXIF orientation applied; the same
    checks as :func:`decode_image`. For masks, whose transparency is what matters."""
    image = _open(data, param, limits or DecodeLimits())
    with image:
        try:
            image.load()
            return ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise InvalidImage(
                f"{param} could not be decoded ({error}); it may be truncated or corrupt", param=param
            ) from None


def decode_image(
    data: bytes,
    *,
    param: str = "image",
    limits: DecodeLimits | None = None,
    size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode ``data`` into an RGB image, or raise :class:`InvalidImage` naming ``param``.

    With ``size`` (width, height as displayed) the image is scaled to exactly that size, and a large
    image is reduced while it is decoded (JPEG's draft mode, then a cheap box reduction), so a
    reference scaled down to one megapixel never exists in full size as RGB.
    """
    image = _open(data, param, limits or DecodeLimits())
    with image:
        try:
            if size is not None and image.format == "JPEG":
                transposed = _orientation(image) in _TRANSPOSED
                image.draft("RGB", (size[1], size[0]) if transposed else size)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            if size is None:
                return _flatten(image)
            return _scaled(_flatten(_reduced(image, size)), size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise InvalidImage(
                f"{param} could not be decoded ({error}); it may be truncated or corrupt", param=param
            ) from None


_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "I", "F")


def _reduced(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A box reduction by a whole factor that keeps at least twice ``size``: the final resize then
    has enough detail to filter, and works on a fraction of the pixels."""
    factor = min(image.width // (2 * size[0]), image.height // (2 * size[1]))
    if factor < 2:
        return image
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode not in _REDUCIBLE:
        image = image.convert("RGBA" if image.mode in ("PA", "P") and "transparency" in image.info else "RGB")
    return image.reduce(factor)


def _scaled(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)
