"""A FLUX.2 prediction's ``input`` (Replicate's field names) mapped to fluxserve's images request.

Pure: no HTTP and no I/O. The reference images arrive already read (see :mod:`.sources`); their
headers give ``match_input_image`` its shape. Every field either changes the request or is refused
with the field named ``input.<name>``: the only ones accepted without effect are those Replicate
itself documents as having none in that case (``output_quality`` for png).
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import ValidationError

from fluxserve.api.parsing import ImageRequest, RawImage
from fluxserve.api.protocol.images import ImageFields
from fluxserve.api.protocol.replicate import FluxInput
from fluxserve.engines.base import Capabilities
from fluxserve.engines.validation import MEGAPIXEL, nearest_valid_size
from fluxserve.errors import InvalidRequest
from fluxserve.imaging.decode import ImageInfo

DEFAULT_ASPECT_RATIO = "1:1"
DEFAULT_MEGAPIXELS = 1.0
DEFAULT_FORMAT = "webp"
DEFAULT_QUALITY = 80
MATCH = "match_input_image"
_RESOLUTION = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?MP", re.IGNORECASE)


def parse_input(data: dict[str, Any]) -> FluxInput:
    """The checked ``input``; an unknown field or a wrong type names ``input.<field>``."""
    try:
        return FluxInput.model_validate(data, strict=True)
    except ValidationError as error:
        detail = error.errors(include_url=False)[0]
        param = "input." + ".".join(str(part) for part in detail["loc"])
        if detail["type"] == "extra_forbidden":
            raise InvalidRequest(f"{param} is not an input of this model", param=param) from None
        raise InvalidRequest(f"{param}: {detail['msg']}", param=param) from None


def _refuse_unsupported(flux: FluxInput) -> None:
    if flux.go_fast:
        raise InvalidRequest("go_fast is not available here; omit it or send false", param="input.go_fast")
    if flux.prompt_upsampling:
        raise InvalidRequest(
            "prompt_upsampling is not available here (prompts are used as written); omit it or send false",
            param="input.prompt_upsampling",
        )


def _ratio(flux: FluxInput, first: ImageInfo | None) -> float:
    aspect = flux.aspect_ratio or DEFAULT_ASPECT_RATIO
    if aspect == MATCH:
        if first is None:
            raise InvalidRequest("aspect_ratio match_input_image needs input_images", param="input.aspect_ratio")
        return first.width / first.height
    across, down = aspect.split(":")
    return int(across) / int(down)


def _pixels(flux: FluxInput, first: ImageInfo | None, caps: Capabilities) -> float:
    resolution = flux.resolution or f"{DEFAULT_MEGAPIXELS:g} MP"
    if resolution == MATCH:
        if first is None:
            raise InvalidRequest("resolution match_input_image needs input_images", param="input.resolution")
        return float(first.pixels)
    match = _RESOLUTION.fullmatch(resolution.strip())
    if match is None or float(match.group(1)) <= 0:
        raise InvalidRequest(
            f'resolution must be like "1 MP" or match_input_image, not {resolution!r}', param="input.resolution"
        )
    megapixels = float(match.group(1))
    if megapixels > caps.max_megapixels:
        raise InvalidRequest(
            f"resolution {resolution} is more than {caps.name} makes ({caps.max_megapixels:g} MP at most)",
            param="input.resolution",
        )
    return megapixels * MEGAPIXEL


def _custom_size(flux: FluxInput, caps: Capabilities) -> tuple[int, int]:
    if flux.width is None or flux.height is None:
        missing = "input.width" if flux.width is None else "input.height"
        raise InvalidRequest("aspect_ratio custom needs width and height", param=missing)
    if flux.resolution is not None:
        raise InvalidRequest("resolution does not apply with aspect_ratio custom; omit it", param="input.resolution")
    multiple = caps.size_multiple  # Replicate rounds custom sizes to the model's multiple, as done here (halves up)
    return (
        max(multiple, math.floor(flux.width / multiple + 0.5) * multiple),
        max(multiple, math.floor(flux.height / multiple + 0.5) * multiple),
    )


def output_size(flux: FluxInput, first: ImageInfo | None, caps: Capabilities) -> tuple[int, int]:
    """The image's size: ``aspect_ratio`` and ``resolution``, or ``width``/``height`` with custom."""
    if flux.aspect_ratio == "custom":
        return _custom_size(flux, caps)
    if flux.width is not None or flux.height is not None:
        param = "input.width" if flux.width is not None else "input.height"
        raise InvalidRequest("width and height need aspect_ratio custom", param=param)
    ratio, pixels = _ratio(flux, first), _pixels(flux, first, caps)
    width = math.sqrt(pixels * ratio)
    return nearest_valid_size(round(width), round(width / ratio), caps)


def _format_and_compression(flux: FluxInput) -> tuple[str, int | None]:
    fmt = flux.output_format or DEFAULT_FORMAT
    if fmt == "png":  # Replicate: output_quality "is not relevant for .png outputs"
        return "png", None
    quality = DEFAULT_QUALITY if flux.output_quality is None else flux.output_quality
    return ("jpeg" if fmt == "jpg" else fmt), 100 - quality


def image_request(
    flux: FluxInput, *, model: str, caps: Capabilities, images: list[RawImage], first: ImageInfo | None
) -> ImageRequest:
    """The images request ``flux`` means for ``model``; ``first``: the first input image's header."""
    _refuse_unsupported(flux)
    if not flux.prompt:
        raise InvalidRequest("prompt is required", param="input.prompt")
    width, height = output_size(flux, first, caps)
    fmt, compression = _format_and_compression(flux)
    fields = ImageFields.model_validate(
        {
            "prompt": flux.prompt,
            "model": model,
            "n": 1,
            "width": width,
            "height": height,
            "response_format": "url",
            "output_format": fmt,
            "output_compression": compression,
            "seed": flux.seed,
            "steps": flux.steps,
            "guidance": flux.guidance,
            "safety_tolerance": flux.safety_tolerance,
        }
    )
    return ImageRequest(fields, images)


def echoed_input(
    prompt: str, width: int, height: int, seed: int, steps: int, guidance: float | None, fmt: str
) -> dict[str, Any]:
    """A prediction's ``input`` as fluxserve resolved it, under Replicate's names (the seed drawn)."""
    echoed: dict[str, Any] = {
        "prompt": prompt,
        "aspect_ratio": "custom",
        "width": width,
        "height": height,
        "seed": seed,
        "steps": steps,
        "output_format": "jpg" if fmt == "jpeg" else fmt,
    }
    if guidance is not None:
        echoed["guidance"] = guidance
    return echoed
