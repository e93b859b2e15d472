"""Decoding untrusted reference images."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from fluxserve.errors import InvalidImage
from fluxserve.imaging.decode import DecodeLimits, decode_image
from tests.helpers import photo, png_bomb


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_accepted_formats_decode_to_rgb(fmt: str) -> None:
    image = decode_image(encoded(photo(120, 80), fmt))
    assert image.size == (120, 80)
    assert image.mode == "RGB"


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = decode_image(encoded(photo(120, 80), "JPEG", exif=exif.tobytes()))
    assert image.size == (80, 120)


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    assert decode_image(encoded(clear, "PNG")).getpixel((10, 10)) == (255, 255, 255)
    half = Image.new("LA", (64, 64), (0, 255))
    assert decode_image(encoded(half, "PNG")).getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.parametrize("side", [10_000, 30_000])  # over fluxserve's limit; over Pillow's own too
def test_a_decompression_bomb_is_refused_without_being_expanded(side: int) -> None:
    bomb = png_bomb(side)  # up to 900 megapixels in about 100 KB
    assert len(bomb) < 500_000
    with pytest.raises(InvalidImage, match="megapixels") as caught:
        decode_image(bomb, param="input_image_0")
    assert caught.value.param == "input_image_0"


def test_the_pixel_limit_is_configurable() -> None:
    data = encoded(photo(200, 200), "PNG")
    with pytest.raises(InvalidImage, match="200x200"):
        decode_image(data, limits=DecodeLimits(max_pixels=10_000))


def test_a_truncated_jpeg_is_an_error_not_a_partial_image() -> None:
    data = encoded(photo(256, 256), "JPEG", quality=95)
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_a_truncated_png_is_an_error() -> None:
    data = encoded(photo(256, 256), "PNG")
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        decode_image(data[: len(data) // 3])


@pytest.mark.parametrize("data", [b"hello world", b"%PDF-1.7\n", b"\x00" * 64, b"<svg></svg>"])
def test_non_images_are_named_as_such(data: bytes) -> None:
    with pytest.raises(InvalidImage, match="is not an image"):
        decode_image(data, param="image")


@pytest.mark.parametrize("fmt", ["TIFF", "BMP"])
def test_unsupported_formats_are_named(fmt: str) -> None:
    with pytest.raises(InvalidImage, match=f"is {fmt}, which is not supported"):
        decode_image(encoded(photo(64, 64), fmt))


def test_empty_and_oversized_payloads() -> None:
    with pytest.raises(InvalidImage, match="is empty"):
        decode_image(b"")
    with pytest.raises(InvalidImage, match="the limit is 1 MB"):
        decode_image(b"\x89PNG" + b"\x00" * 2_000_000, limits=DecodeLimits(max_bytes=1_000_000))


def test_a_jpeg_cut_inside_its_header_is_an_error() -> None:
    data = encoded(photo(128, 128), "JPEG")
    for cut in (300, 600):
        with pytest.raises(InvalidImage, match="truncated or corrupt"):
            decode_image(data[:cut], param="input_image")
