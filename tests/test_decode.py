"""Decoding untrusted reference images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fluxserve.errors import InvalidImage
from fluxserve.imaging.decode import DecodeLimits, decode_image, probe_image
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


# -- the header alone, and decoding straight to a size ------------------------------------------


def test_the_probe_reads_the_displayed_size_from_the_header() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated: 80 wide, 120 high
    info = probe_image(encoded(photo(120, 80), "JPEG", exif=exif.tobytes()))
    assert (info.width, info.height, info.format) == (80, 120, "JPEG")


def test_the_probe_refuses_what_decoding_would_before_any_pixel() -> None:
    with pytest.raises(InvalidImage, match="megapixels"):
        probe_image(png_bomb(30_000))
    with pytest.raises(InvalidImage, match="not an image"):
        probe_image(b"hello world" * 10)


MODES = {
    "16-bit grey PNG": encoded(
        Image.fromarray((np.arange(960_000) % 65536).astype(np.uint16).reshape(800, 1200)), "PNG"
    ),
    "CMYK JPEG": encoded(Image.new("CMYK", (1200, 800), (10, 20, 30, 40)), "JPEG"),
    "palette PNG with transparency": encoded(Image.new("P", (1200, 800)), "PNG", transparency=0),
    "grey with alpha PNG": encoded(Image.new("LA", (1200, 800)), "PNG"),
    "1-bit PNG": encoded(Image.new("1", (1200, 800)), "PNG"),
    "animated GIF": encoded(
        Image.new("P", (1200, 800)), "GIF", save_all=True, append_images=[Image.new("P", (1200, 800))]
    ),
    "RGBA WebP": encoded(Image.new("RGBA", (1200, 800), (1, 2, 3, 100)), "WEBP"),
    "photo JPEG": encoded(photo(1200, 800), "JPEG"),
}


@pytest.mark.parametrize("name", list(MODES))
def test_decoding_to_a_size_gives_rgb_of_exactly_that_size(name: str) -> None:
    image = decode_image(MODES[name], size=(150, 100))
    assert (image.size, image.mode) == ((150, 100), "RGB")


def test_decoding_to_a_size_matches_scaling_the_full_image() -> None:
    """The cheap path (JPEG draft, box reduction) looks like the full decode scaled down."""
    data = encoded(photo(1200, 800), "PNG")
    cheap = np.asarray(decode_image(data, size=(150, 100)), dtype=float)
    full = np.asarray(decode_image(data).resize((150, 100), Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(cheap - full).mean() < 3  # of 255
