"""Check a request against an engine's capabilities before any compute.

:func:`validate` returns a fully resolved request (size, steps, guidance and seed filled in,
references scaled to the model's budget) or raises :class:`InvalidRequest` with a message that
says what to send instead. A resolved request is deterministic: running it twice gives the
same images.

A megapixel here is 1024 x 1024 pixels, so a 4-megapixel model accepts 2048x2048.
"""

from __future__ import annotations

import math
import secrets

from PIL import Image

from fluxserve.engines.base import Capabilities, GenerationRequest, LoraChoice, ResolvedRequest, Steps
from fluxserve.engines.loras import check_scales
from fluxserve.errors import InvalidImage, InvalidPrompt, InvalidRequest
from fluxserve.imaging.masks import mask_from_image, scale_mask
from fluxserve.numbers import MAX_WHOLE, ascii_int
from fluxserve.prompts.structured import prompt_text

MEGAPIXEL = 1024 * 1024
MAX_SEED = 2**32 - 1
REFERENCE_MIN_SIDE = 64
REFERENCE_MAX_ASPECT = 8.0


def seed_for_image(seed: int, index: int) -> int:
    """The seed of image ``index`` of a request whose first image has ``seed``."""
    return (seed + index) % (MAX_SEED + 1)


def denoising_steps(steps: int, strength: float | None) -> int:
    """How many of ``steps`` an edit with ``strength`` runs: diffusers' image-to-image pipelines skip the
    first ``steps * (1 - strength)`` (rounded down), as their ``get_timesteps`` computes it."""
    if strength is None:
        return steps
    start = int(max(steps - min(steps * strength, steps), 0))
    return steps - start


def draw_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)  # halves round up


def nearest_valid_size(width: int, height: int, caps: Capabilities) -> tuple[int, int]:
    """The valid size closest to ``width`` x ``height`` with about the same aspect ratio."""
    w, h = float(max(width, 1)), float(max(height, 1))
    if w / h > caps.max_aspect_ratio:
        h = w / caps.max_aspect_ratio
    elif h / w > caps.max_aspect_ratio:
        w = h / caps.max_aspect_ratio
    max_pixels = caps.max_megapixels * MEGAPIXEL
    for limit in (max_pixels, caps.max_side**2):
        if w * h > limit:
            scale = math.sqrt(limit / (w * h))
            w, h = w * scale, h * scale
    scale = min(1.0, caps.max_side / max(w, h))
    w, h = w * scale, h * scale
    low = math.ceil(caps.min_side / caps.size_multiple) * caps.size_multiple
    high = caps.max_side // caps.size_multiple * caps.size_multiple
    rw = min(high, max(low, _round_to(w, caps.size_multiple)))
    rh = min(high, max(low, _round_to(h, caps.size_multiple)))
    # Rounding can overshoot the pixel budget or the aspect ratio: trim the longer side.
    while rw * rh > max_pixels or max(rw, rh) / min(rw, rh) > caps.max_aspect_ratio:
        if rw >= rh:
            rw -= caps.size_multiple
        else:
            rh -= caps.size_multiple
    return rw, rh


def _check_int(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{param} must be a whole number, not {value!r}", param=param)
    return value


def _check_size(width: int, height: int, caps: Capabilities) -> None:
    _check_int(width, "width")
    _check_int(height, "height")
    suggestion = "{}x{}".format(*nearest_valid_size(width, height, caps))
    for param, value in (("width", width), ("height", height)):
        if value < caps.min_side or value > caps.max_side:
            raise InvalidRequest(
                f"{param} {value} is outside {caps.min_side}-{caps.max_side} for {caps.name}; "
                f"the nearest valid size is {suggestion}",
                param=param,
            )
        if value % caps.size_multiple:
            raise InvalidRequest(
                f"{param} {value} is not a multiple of {caps.size_multiple}; the nearest valid size is {suggestion}",
                param=param,
            )
    if width * height > caps.max_megapixels * MEGAPIXEL:
        raise InvalidRequest(
            f"{width}x{height} is {width * height / MEGAPIXEL:.2f} megapixels; {caps.name} makes at most "
            f"{caps.max_megapixels:g}; the nearest valid size is {suggestion}",
            param="size",
        )
    if max(width / height, height / width) > caps.max_aspect_ratio:
        raise InvalidRequest(
            f"{width}x{height} is wider than {caps.max_aspect_ratio:g}:1; the nearest valid size is {suggestion}",
            param="size",
        )


def _check_steps(steps: int | None, caps: Capabilities) -> int:
    if steps is None:
        return Steps.PROVIDER_CHOOSES if caps.default_steps == Steps.PROVIDER_CHOOSES else caps.default_steps
    _check_int(steps, "steps")
    if caps.default_steps == Steps.PROVIDER_CHOOSES:  # a hosted model that takes no step count
        if steps != Steps.PROVIDER_CHOOSES:  # what a stored job of such a model holds is accepted again
            raise InvalidRequest(f"{caps.name} chooses its own number of steps; omit steps", param="steps")
        return Steps.PROVIDER_CHOOSES
    if caps.fixed_steps and steps != caps.default_steps:
        raise InvalidRequest(
            f"{caps.name} is step-distilled and always runs {caps.default_steps} steps; "
            f"omit steps or send {caps.default_steps}",
            param="steps",
        )
    if not caps.min_steps <= steps <= caps.max_steps:
        raise InvalidRequest(
            f"steps {steps} is outside {caps.min_steps}-{caps.max_steps} for {caps.name} "
            f"(the default is {caps.default_steps})",
            param="steps",
        )
    return steps


def _check_guidance(guidance: float | None, caps: Capabilities) -> float | None:
    if not caps.guidance:
        if guidance is not None:
            raise InvalidRequest(f"{caps.name} is distilled and takes no guidance; omit guidance", param="guidance")
        return None
    if guidance is None:
        return caps.default_guidance
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or not math.isfinite(guidance):
        raise InvalidRequest(f"guidance must be a number, not {guidance!r}", param="guidance")
    if not caps.min_guidance <= guidance <= caps.max_guidance:
        raise InvalidRequest(
            f"guidance {guidance:g} is outside {caps.min_guidance:g}-{caps.max_guidance:g} for {caps.name} "
            f"(the default is {caps.default_guidance:g})",
            param="guidance",
        )
    return float(guidance)


def _check_seed(seed: int | None) -> int:
    if seed is None:
        return draw_seed()
    _check_int(seed, "seed")
    if not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(f"seed {seed} is outside 0-{MAX_SEED}", param="seed")
    return seed


SAFETY_TOLERANCE_RANGE = (0, 5)


def _check_safety_tolerance(value: int | None, caps: Capabilities) -> int | None:
    """A provider's moderation setting: only where the model has one, 0 (strictest) to 5."""
    if value is None:
        return None
    if not caps.safety_tolerance:
        raise InvalidRequest(
            f"{caps.name} has no safety filter setting; omit safety_tolerance", param="safety_tolerance"
        )
    _check_int(value, "safety_tolerance")
    low, high = SAFETY_TOLERANCE_RANGE
    if not low <= value <= high:
        raise InvalidRequest(
            f"safety_tolerance {value} is outside {low}-{high} ({low} is the strictest)", param="safety_tolerance"
        )
    return value


def check_reference_shape(width: int, height: int, caps: Capabilities, param: str) -> tuple[int, int]:
    """Check a reference image's size (as displayed) and return the size it is scaled to for ``caps``.

    Works from the size alone, so a request can be checked before any pixel is decoded.
    """
    if min(width, height) < REFERENCE_MIN_SIDE:
        raise InvalidImage(
            f"{param} is {width}x{height}; reference images need at least {REFERENCE_MIN_SIDE} px on each side",
            param=param,
        )
    if max(width / height, height / width) > REFERENCE_MAX_ASPECT:
        raise InvalidImage(
            f"{param} is {width}x{height}, more elongated than {REFERENCE_MAX_ASPECT:g}:1; crop it first",
            param=param,
        )
    budget = caps.reference_max_megapixels * MEGAPIXEL
    scale = min(1.0, math.sqrt(budget / (width * height)))
    if caps.reference_max_side is not None:
        scale = min(scale, caps.reference_max_side / max(width, height))
    if scale >= 1.0:
        return width, height
    return max(REFERENCE_MIN_SIDE, int(width * scale)), max(REFERENCE_MIN_SIDE, int(height * scale))


def fit_reference(image: Image.Image, caps: Capabilities, param: str) -> Image.Image:
    """Check one reference image and scale it down to the model's per-reference budget."""
    size = check_reference_shape(image.width, image.height, caps, param)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def check_reference_count(count: int, caps: Capabilities, *, image_to_image: bool = False) -> None:
    """At most ``caps.max_reference_images`` images; an image-to-image edit (a mask or a strength)
    always takes the one image it edits, even on a model without reference images (FLUX.1)."""
    limit = max(caps.max_reference_images, 1) if image_to_image else caps.max_reference_images
    if count <= limit:
        return
    if limit == 0:
        message = f"{caps.name} takes no reference images; use a FLUX.2 model to edit or combine images"
        if caps.masks:
            message += f", or send a mask or strength to edit one image with {caps.name}"
    elif caps.max_reference_images == 0:
        message = f"{count} images sent; {caps.name} edits one image and takes no reference images besides it"
    else:
        message = f"{count} reference images sent; {caps.name} takes at most {caps.max_reference_images}"
    raise InvalidRequest(message, param="image")


def _check_references(references: list[Image.Image], caps: Capabilities, *, image_to_image: bool) -> list[Image.Image]:
    check_reference_count(len(references), caps, image_to_image=image_to_image)
    return [fit_reference(image, caps, f"image[{i}]") for i, image in enumerate(references)]


def image_to_image_size(first: tuple[int, int], caps: Capabilities) -> tuple[int, int]:
    """The output size of a masked edit or an edit with ``strength``: the first reference's size
    (as scaled to the model's budget), each side rounded down to the model's size multiple."""
    multiple = caps.size_multiple
    return first[0] // multiple * multiple, first[1] // multiple * multiple


def check_strength(strength: float | None, *, masked: bool, images: int, caps: Capabilities) -> float | None:
    """The strength an edit runs at: 1.0 for a mask without one; None for an edit that starts from noise.

    A mask or a strength needs a model with masked editing (``caps.masks``) and an image to edit.
    """
    if masked and not caps.masks:
        raise InvalidRequest(f"{caps.name} takes no mask; send the image without one", param="mask")
    if strength is None:
        strength = 1.0 if masked else None
    elif not caps.masks:
        raise InvalidRequest(f"{caps.name} takes no strength; omit strength", param="strength")
    elif isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength):
        raise InvalidRequest(f"strength must be a number from 0 to 1, not {strength!r}", param="strength")
    elif not 0 <= strength <= 1:
        raise InvalidRequest(f"strength {strength:g} is outside 0-1", param="strength")
    if strength is not None and images == 0:
        param = "mask" if masked else "strength"
        raise InvalidRequest(f"{param} needs an image to edit: send the image it applies to", param=param)
    return None if strength is None else float(strength)


def check_image_to_image_size(width: int | None, height: int | None, expected: tuple[int, int]) -> tuple[int, int]:
    """The size of an image-to-image edit: it keeps the first image's shape, so a different size is refused."""
    if width is not None and (width, height) != expected:
        raise InvalidRequest(
            f"a masked edit or an edit with strength keeps the first image's size: omit size, or send "
            f"{expected[0]}x{expected[1]}",
            param="size",
        )
    return expected


def _mask_at(mask: Image.Image, first: Image.Image, size: tuple[int, int]) -> Image.Image:
    if mask.size != first.size:
        raise InvalidImage(
            f"mask is {mask.width}x{mask.height}; it must be the size of the first image, {first.width}x{first.height}",
            param="mask",
        )
    return scale_mask(mask_from_image(mask), size)


def _check_loras(loras: tuple[LoraChoice, ...], caps: Capabilities) -> tuple[LoraChoice, ...]:
    """Scales and duplicates here; names, files and families are the catalog's (``engines.loras``)."""
    if not loras:
        return ()
    if caps.lora_family is None:
        raise InvalidRequest(f"{caps.name} takes no LoRA adapters; omit loras", param="loras")
    check_scales(loras)
    return tuple(LoraChoice(choice.name, float(choice.scale)) for choice in loras)


def _default_size(references: list[Image.Image], caps: Capabilities) -> tuple[int, int]:
    if references:
        return nearest_valid_size(*references[0].size, caps)
    return caps.default_width, caps.default_height


def validate(request: GenerationRequest | ResolvedRequest, caps: Capabilities) -> ResolvedRequest:
    """``request`` with every default resolved, or :class:`InvalidRequest`.

    A request resolved before (a stored job) passes again unchanged: resolving is idempotent.
    """
    prompt = prompt_text(request.prompt)
    if caps.max_prompt_chars is not None and len(prompt) > caps.max_prompt_chars:
        raise InvalidPrompt(
            f"the prompt is {len(prompt)} characters; {caps.name} takes at most {caps.max_prompt_chars}",
            param="prompt",
        )
    n = _check_int(request.n, "n")
    if not 1 <= n <= caps.max_images:
        raise InvalidRequest(f"n {n} is outside 1-{caps.max_images}", param="n")
    masked = request.mask is not None
    strength = check_strength(request.strength, masked=masked, images=len(request.references), caps=caps)
    references = _check_references(list(request.references), caps, image_to_image=strength is not None)
    if (request.width is None) != (request.height is None):
        raise InvalidRequest("send both width and height, or neither", param="width")
    mask = None
    if strength is not None:  # image to image: the first reference, at the output size, is the start
        size = check_image_to_image_size(request.width, request.height, image_to_image_size(references[0].size, caps))
        if request.mask is not None:
            mask = _mask_at(request.mask, request.references[0], size)
        if references[0].size != size:
            references[0] = references[0].resize(size, Image.Resampling.LANCZOS)
        width, height = size
    elif request.width is None or request.height is None:
        width, height = _default_size(request.references, caps)
    else:
        width, height = request.width, request.height
    _check_size(width, height, caps)
    return ResolvedRequest(
        prompt=prompt,
        references=references,
        width=width,
        height=height,
        steps=_check_steps(request.steps, caps),
        guidance=_check_guidance(request.guidance, caps),
        seed=_check_seed(request.seed),
        n=n,
        safety_tolerance=_check_safety_tolerance(request.safety_tolerance, caps),
        output_format=request.output_format,
        mask=mask,
        strength=strength,
        loras=_check_loras(tuple(request.loras), caps),
    )


def parse_size(text: str, *, param: str = "size") -> tuple[int, int] | None:
    """Parse ``"WxH"`` (or ``"auto"``, which returns ``None``: the engine's default)."""
    value = text.strip().lower()
    if value == "auto":
        return None
    width, sep, height = value.partition("x")
    w, h = ascii_int(width), ascii_int(height)
    if not sep or w is None or h is None:
        raise InvalidRequest(f"{param} {text!r} is not of the form WIDTHxHEIGHT, for example 1024x768", param=param)
    if max(w, h) > MAX_WHOLE:
        raise InvalidRequest(f"{param} {text!r} is far larger than any model makes; send e.g. 1024x768", param=param)
    return w, h
