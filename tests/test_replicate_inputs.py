"""Replicate's FLUX.2 input fields mapped to fluxserve's images request (api/replicate/inputs.py)."""

from __future__ import annotations

from typing import Any

import pytest

from fluxserve.api.parsing import RawImage
from fluxserve.api.replicate.inputs import image_request, output_size, parse_input
from fluxserve.engines.base import Capabilities
from fluxserve.errors import InvalidRequest
from fluxserve.imaging.decode import ImageInfo

CAPS = Capabilities(name="flux.2-dev", family="flux.2-dev", max_megapixels=4.0, max_reference_images=4)
WIDE = ImageInfo(2000, 1000, "PNG")


def size(first: ImageInfo | None = None, **inputs: Any) -> tuple[int, int]:
    return output_size(parse_input({"prompt": "x", **inputs}), first, CAPS)


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({}, (1024, 1024)),  # Replicate's defaults: 1:1 at 1 MP
        ({"aspect_ratio": "16:9"}, (1360, 768)),
        ({"aspect_ratio": "2:3", "resolution": "0.25 MP"}, (416, 624)),
        ({"aspect_ratio": "1:1", "resolution": "4 MP"}, (2048, 2048)),
        ({"aspect_ratio": "custom", "width": 1000, "height": 504}, (1008, 512)),  # to 16s, halves up
    ],
)
def test_the_size_each_setting_makes(inputs: dict[str, Any], expected: tuple[int, int]) -> None:
    assert size(**inputs) == expected


def test_match_input_image_takes_the_first_image_shape_and_its_pixels() -> None:
    assert size(WIDE, aspect_ratio="match_input_image") == (1456, 720)
    assert size(WIDE, aspect_ratio="match_input_image", resolution="match_input_image") == (2000, 1008)


@pytest.mark.parametrize(
    ("inputs", "param"),
    [
        ({"width": 512, "height": 512}, "input.width"),
        ({"aspect_ratio": "custom", "width": 512}, "input.height"),
        ({"aspect_ratio": "custom", "width": 512, "height": 512, "resolution": "1 MP"}, "input.resolution"),
        ({"resolution": "8 MP"}, "input.resolution"),
        ({"resolution": "big"}, "input.resolution"),
        ({"aspect_ratio": "match_input_image"}, "input.aspect_ratio"),
    ],
)
def test_sizes_that_cannot_be_honoured_are_refused(inputs: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        size(**inputs)
    assert refused.value.param == param


@pytest.mark.parametrize(
    ("inputs", "param"),
    [
        ({"num_outputs": 2}, "input.num_outputs"),
        ({"seed": "7"}, "input.seed"),
        ({"output_format": "gif"}, "input.output_format"),
        ({"output_quality": 101}, "input.output_quality"),
    ],
)
def test_unknown_and_mistyped_fields_name_the_field(inputs: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_input({"prompt": "x", **inputs})
    assert refused.value.param == param


def request_for(**inputs: Any) -> Any:
    flux = parse_input(inputs)
    return image_request(flux, model="flux.2-dev", caps=CAPS, images=[], first=None).fields


def test_formats_quality_and_the_other_fields_reach_the_request() -> None:
    fields = request_for(prompt="x", seed=3, steps=20, guidance=2.5, output_format="jpg", output_quality=90)
    assert (fields.output_format, fields.output_compression) == ("jpeg", 10)
    assert (fields.seed, fields.steps, fields.guidance, fields.n, fields.response_format) == (3, 20, 2.5, 1, "url")
    assert (request_for(prompt="x").output_format, request_for(prompt="x").output_compression) == ("webp", 20)
    # Replicate: output_quality "is not relevant for .png outputs"
    assert request_for(prompt="x", output_format="png", output_quality=10).output_compression is None


@pytest.mark.parametrize("field", ["go_fast", "prompt_upsampling"])
def test_options_not_available_here_are_refused_when_asked_for(field: str) -> None:
    assert request_for(prompt="x", **{field: False}).prompt == "x"
    with pytest.raises(InvalidRequest) as refused:
        request_for(prompt="x", **{field: True})
    assert refused.value.param == f"input.{field}"


def test_a_prompt_is_required_and_images_travel_along() -> None:
    with pytest.raises(InvalidRequest, match="prompt is required"):
        request_for(seed=1)
    image = RawImage("input.input_images[0]", b"png")
    flux = parse_input({"prompt": "x", "input_images": ["data:..."]})
    assert image_request(flux, model="m", caps=CAPS, images=[image], first=WIDE).images == [image]
