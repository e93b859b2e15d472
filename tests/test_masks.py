"""Reading edit masks (imaging/masks.py): transparency or plain black and white, nothing guessed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fluxserve.errors import InvalidImage
from fluxserve.imaging.decode import DecodeLimits
from fluxserve.imaging.masks import CHANGE, KEEP, decode_mask, keep_unmasked, mask_from_image, scale_mask
from tests.helpers import photo, png_bomb, png_bytes


def transparent_square(
    size: tuple[int, int] = (64, 48), box: tuple[int, int, int, int] = (8, 8, 24, 24)
) -> Image.Image:
    """An opaque RGBA image with one fully transparent rectangle: OpenAI's mask form."""
    mask = Image.new("RGBA", size, (10, 20, 30, 255))
    mask.paste((0, 0, 0, 0), box)
    return mask


def test_transparent_pixels_change_and_opaque_ones_keep() -> None:
    mask = mask_from_image(transparent_square())
    pixels = np.asarray(mask)
    assert mask.mode == "L"
    assert (pixels[8:24, 8:24] == CHANGE).all()
    assert (pixels == CHANGE).sum() == 16 * 16
    assert set(np.unique(pixels)) == {KEEP, CHANGE}


def test_half_transparent_pixels_change_below_alpha_128() -> None:
    image = Image.new("LA", (4, 1))
    image.putdata([(0, 0), (0, 127), (0, 128), (0, 255)])
    assert list(mask_from_image(image).get_flattened_data()) == [CHANGE, CHANGE, KEEP, KEEP]


def test_a_palette_image_with_a_transparent_colour_is_read_by_its_transparency() -> None:
    image = transparent_square().convert("RGB").convert("P")
    transparent_index = image.getpixel((10, 10))
    image.info["transparency"] = transparent_index
    assert np.asarray(mask_from_image(image))[10, 10] == CHANGE


def test_plain_black_and_white_white_changes() -> None:
    image = Image.new("RGB", (32, 32), "black")
    image.paste((255, 255, 255), (0, 0, 16, 32))
    pixels = np.asarray(mask_from_image(image))
    assert (pixels[:, :16] == CHANGE).all()
    assert (pixels[:, 16:] == KEEP).all()


@pytest.mark.parametrize(
    "image",
    [photo(32, 32), Image.new("L", (32, 32), 128), Image.new("RGB", (32, 32), (255, 0, 0))],
    ids=["photo", "grey", "red"],
)
def test_no_alpha_and_not_black_and_white_is_refused(image: Image.Image) -> None:
    with pytest.raises(InvalidImage, match="not plain black and white") as caught:
        mask_from_image(image)
    assert caught.value.param == "mask"


@pytest.mark.parametrize(
    "image",
    [Image.new("RGBA", (32, 32), (0, 0, 0, 255)), Image.new("RGB", (32, 32), "black")],
    ids=["opaque", "all black"],
)
def test_a_mask_that_marks_nothing_is_refused(image: Image.Image) -> None:
    with pytest.raises(InvalidImage, match="marks nothing to change") as caught:
        mask_from_image(image)
    assert caught.value.param == "mask"


def test_decode_checks_the_header_limits_first() -> None:
    with pytest.raises(InvalidImage, match="megapixels") as caught:
        decode_mask(png_bomb(20_000), limits=DecodeLimits(max_pixels=10_000_000))
    assert caught.value.param == "mask"


def test_decode_reads_a_png_and_scales_it_binary() -> None:
    mask = decode_mask(png_bytes(transparent_square((64, 48))), size=(32, 24))
    assert mask.size == (32, 24)
    assert set(np.unique(np.asarray(mask))) == {KEEP, CHANGE}
    assert scale_mask(mask, mask.size) is mask


def test_a_corrupt_mask_names_mask() -> None:
    data = png_bytes(transparent_square())
    with pytest.raises(InvalidImage) as caught:
        decode_mask(data[: len(data) // 2])
    assert caught.value.param == "mask"


def test_keep_unmasked_takes_the_original_pixels_exactly_outside() -> None:
    original, generated = photo(64, 48, seed=1), photo(64, 48, seed=2)
    mask = mask_from_image(transparent_square())
    out = np.asarray(keep_unmasked(generated, original, mask))
    inside = np.asarray(mask) == CHANGE
    assert (out[~inside] == np.asarray(original)[~inside]).all()
    assert (out[inside] == np.asarray(generated)[inside]).all()
