"""Turn a generation result into encoded files that carry their own parameters (for the worker and the CLI)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fluxserve.engines.base import GenerationResult
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
