"""Encoding outputs: the fast PNG writer, the formats, and the parameters they carry."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fluxserve import __version__
from fluxserve.errors import InvalidRequest
from fluxserve.imaging.encode import ImageFormat, encode_image, read_parameters
from fluxserve.imaging.png import encode_png
from tests.helpers import photo

PARAMETERS = {
    "prompt": 'a "quoted" <tag> & 猫 prompt',
    "model": "tiny-random",
    "seed": 0,
    "steps": 4,
    "guidance": None,
    "width": 96,
    "height": 64,
}


@pytest.mark.parametrize("level", range(10))
def test_the_png_writer_is_lossless_at_every_level(level: int) -> None:
    image = photo(97, 61)  # odd sizes: no row-alignment luck
    decoded = Image.open(io.BytesIO(encode_png(image, level=level)))
    assert decoded.format == "PNG"
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_the_png_writer_converts_other_modes_and_rejects_bad_levels() -> None:
    grey = Image.new("L", (10, 10), 128)
    assert Image.open(io.BytesIO(encode_png(grey))).getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(ValueError, match="0-9"):
        encode_png(grey, level=10)


def test_higher_png_levels_make_smaller_files() -> None:
    image = photo(256, 256)
    assert len(encode_png(image, level=9)) < len(encode_png(image, level=0))


@pytest.mark.parametrize("fmt", list(ImageFormat))
def test_parameters_round_trip_in_every_format(fmt: ImageFormat) -> None:
    data = encode_image(photo(96, 64), fmt, parameters=PARAMETERS)
    assert Image.open(io.BytesIO(data)).format == fmt.name
    assert read_parameters(data) == {**PARAMETERS, "fluxserve_version": __version__}


@pytest.mark.parametrize("fmt", [ImageFormat.JPEG, ImageFormat.WEBP])
def test_exif_also_carries_the_parameters_for_tools_that_only_read_exif(fmt: ImageFormat) -> None:
    data = encode_image(photo(64, 64), fmt, parameters=PARAMETERS)
    exif = Image.open(io.BytesIO(data)).getexif()
    assert exif[0x0131] == f"fluxserve {__version__}"
    assert '"seed":0' in exif[0x010E]


def test_files_without_parameters_read_as_none() -> None:
    buffer = io.BytesIO()
    photo(32, 32).save(buffer, "JPEG")
    assert read_parameters(buffer.getvalue()) is None


@pytest.mark.parametrize("fmt", [ImageFormat.JPEG, ImageFormat.WEBP])
def test_compression_trades_quality_for_size(fmt: ImageFormat) -> None:
    image = photo(256, 256)
    assert len(encode_image(image, fmt, compression=80)) < len(encode_image(image, fmt, compression=10))


@pytest.mark.parametrize("compression", [-1, 101])
def test_compression_out_of_range(compression: int) -> None:
    with pytest.raises(InvalidRequest, match="between 0 and 100"):
        encode_image(photo(16, 16), ImageFormat.PNG, compression=compression)


def test_format_names() -> None:
    assert ImageFormat.parse("JPG") is ImageFormat.JPEG
    assert ImageFormat.parse(" webp ") is ImageFormat.WEBP
    assert ImageFormat.JPEG.extension == "jpg"
    assert ImageFormat.PNG.media_type == "image/png"
    with pytest.raises(InvalidRequest, match="use png, jpeg or webp") as caught:
        ImageFormat.parse("gif")
    assert caught.value.param == "output_format"
