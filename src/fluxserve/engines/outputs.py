"""Turn a generation result into encoded files that carry their own parameters (for the worker and the CLI):
judged by the content filter, encoded, then signed, in that order (:func:`finish_result`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from fluxserve.engines.base import GenerationResult
from fluxserve.engines.safety import OFF, ContentFilter
from fluxserve.imaging.credentials import Sign
from fluxserve.imaging.encode import ImageFormat, encode_image


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: ImageFormat
    seed: int
    parameters: dict[str, Any]
    seconds: float


def generation_parameters(result: GenerationResult, seed: int) -> dict[str, Any]:
    """What someone needs to reproduce one image of ``result`` alone (with its images and mask)."""
    """What someone needs to reproduce one image of ``result`` alone (adapters only when some were used,
    so an image made without any carries exactly what it did before adapters existed)."""
    parameters: dict[str, Any] = {
        "prompt": result.prompt,
        "model": result.model,
        "seed": seed,
        "steps": result.steps,
        "guidance": result.guidance,
        "width": result.width,
        "height": result.height,
        "reference_images": result.reference_images,
    }
    if result.strength is not None:  # an image-to-image edit
        parameters["strength"] = result.strength
        parameters["mask"] = result.mask
    if result.loras:
        parameters["loras"] = [choice.to_json() for choice in result.loras]
    return parameters


def encode_result(
    result: GenerationResult,
    fmt: ImageFormat,
    *,
    compression: int | None = None,
) -> list[EncodedImage]:
    encoded = []
    for item in result.images:
        started = time.perf_counter()
        parameters = generation_parameters(result, item.seed)
        data = encode_image(item.image, fmt, compression=compression, parameters=parameters)
        encoded.append(EncodedImage(data, fmt, item.seed, parameters, time.perf_counter() - started))
    return encoded


def finish_result(
    result: GenerationResult,
    fmt: ImageFormat,
    *,
    compression: int | None = None,
    content_filter: ContentFilter = OFF,
    sign: Sign | None = None,
) -> list[EncodedImage]:
    """``result``'s images as the files to keep: the content filter judges them first (raising
    :class:`~fluxserve.errors.ContentBlocked`, before anything is encoded, if it withholds one), then each
    is encoded with its parameters, and signed last (nothing may be written into a file after that)."""
    content_filter.check_outputs([generated.image for generated in result.images])
    encoded = encode_result(result, fmt, compression=compression)
    if sign is None:
        return encoded
    return [
        replace(image, data=sign(image.data, fmt, generated.source))
        for image, generated in zip(encoded, result.images, strict=True)
    ]
