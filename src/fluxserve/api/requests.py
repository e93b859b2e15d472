"""Resolve a parsed images request against a model into a job spec: every default filled in.

Two steps, so that every check that can refuse a request runs before any pixel is decoded:
:func:`plan` reads only the fields and the images' headers (count, sizes, megapixels) and makes
the job spec; :func:`decode_references` then decodes each image straight to the size the model
gets. Both run off the event loop. The spec is deterministic: the seed is drawn here and recorded,
so the job can run again after a restart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from fluxserve.accounts.keys import check_adapters_allowed
from fluxserve.api.parsing import ImageRequest, RawImage
from fluxserve.api.protocol.images import ImageFields
from fluxserve.engines.base import Capabilities, GenerationRequest, LoraChoice
from fluxserve.engines.loras import LoraCatalog
from fluxserve.engines.validation import (
    MEGAPIXEL,
    check_image_to_image_size,
    check_reference_count,
    check_reference_shape,
    check_strength,
    image_to_image_size,
    nearest_valid_size,
    parse_size,
    validate,
)
from fluxserve.errors import InvalidImage, InvalidRequest
from fluxserve.imaging.decode import DecodeLimits, ImageInfo, decode_image, probe_image
from fluxserve.imaging.encode import ImageFormat, check_compression
from fluxserve.imaging.masks import decode_mask
from fluxserve.jobs.models import WEBHOOK_EVENTS, JobSpec, Operation, WebhookTarget
from fluxserve.settings import Settings
from fluxserve.webhooks.urls import check_webhook_url

# quality -> multiple of the model's default steps (clamped to its range).
QUALITY_STEPS = {
    "low": 0.5,
    "medium": 1.0,
    "auto": 1.0,
    "standard": 1.0,
    "high": 1.5,
    "hd": 1.5,
    "xhigh": 2.0,
    "max": 2.0,
}


@dataclass(frozen=True)
class PlannedReference:
    """A reference image, checked from its header, and the size the model gets it at."""

    raw: RawImage
    source: ImageInfo
    size: tuple[int, int]


@dataclass(frozen=True)
class Plan:
    """A request checked in full without decoding a pixel: the job it makes and what to decode."""

    spec: JobSpec
    references: list[PlannedReference]
    mask: PlannedReference | None = None
    """The mask, checked from its header; decoded at the first reference's planned size."""

    @property
    def decode_pixels(self) -> int:
        mask = 0 if self.mask is None else self.mask.source.pixels
        return sum(reference.source.pixels for reference in self.references) + mask


def steps_for_quality(quality: str, caps: Capabilities) -> int:
    """The step count a quality preset means for a model (documented in the README)."""
    if caps.fixed_steps:
        return caps.default_steps
    wanted = round(caps.default_steps * QUALITY_STEPS[quality])
    return max(caps.min_steps, min(caps.max_steps, wanted))


def _size(fields: ImageFields) -> tuple[int | None, int | None]:
    size = parse_size(fields.size) if fields.size is not None else None
    if size is not None and fields.width is not None and (fields.width, fields.height) != size:
        raise InvalidRequest(f"size {fields.size} and width/height {fields.width}x{fields.height} disagree; send one")
    if size is not None:
        return size
    return fields.width, fields.height


def _steps(fields: ImageFields, caps: Capabilities) -> int | None:
    if fields.quality is None or fields.quality == "auto":
        return fields.steps
    if fields.steps is not None:
        raise InvalidRequest("send steps or quality, not both (quality is a step preset)", param="quality")
    return steps_for_quality(fields.quality, caps)


MAX_PARTIAL_IMAGES = 3


def _check_unsupported(request: ImageRequest) -> None:
    fields = request.fields
    if fields.background == "transparent":
        raise InvalidRequest("FLUX makes opaque images; omit background or send opaque", param="background")


def _partial_images(fields: ImageFields, streamable: bool) -> int:
    """How many partial images a streamed request wants; refuse stream settings that cannot work."""
    if fields.stream and not streamable:
        raise InvalidRequest(
            "a job streams its progress at GET /v1/jobs/{id}/events (urls.events); omit stream", param="stream"
        )
    partial = fields.partial_images or 0
    if not 0 <= partial <= MAX_PARTIAL_IMAGES:
        raise InvalidRequest(f"partial_images must be 0 to {MAX_PARTIAL_IMAGES}, not {partial}", param="partial_images")
    if not fields.stream:
        if partial:
            raise InvalidRequest("partial_images needs stream: true", param="partial_images")
        return 0
    if fields.n not in (None, 1):
        raise InvalidRequest(
            "a streamed request makes one image: send n=1, or several requests, or use POST /v1/jobs", param="n"
        )
    if fields.response_format == "url":
        raise InvalidRequest(
            "a stream carries the image as b64_json: omit response_format, or send stream: false for a url",
            param="response_format",
        )
    return partial


def _check_output_budget(pixels: int, settings: Settings) -> None:
    if pixels > settings.max_output_megapixels * MEGAPIXEL:
        raise InvalidRequest(
            f"this request asks for {pixels / MEGAPIXEL:.1f} megapixels of images; this server allows "
            f"{settings.max_output_megapixels:g} per request: lower n or the size",
            param="n",
        )


def _limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(max_bytes=settings.max_upload_bytes, max_pixels=int(settings.max_upload_megapixels * 1e6))


def _check_mask_model(request: ImageRequest, model: str, caps: Capabilities, mask_models: Sequence[str]) -> None:
    """A mask (or strength) sent to a model without masked editing: say which served models have it."""
    param = "mask" if request.mask is not None else "strength" if request.fields.strength is not None else None
    if param is None or caps.masks:
        return
    elsewhere = (
        f"models here that take one: {', '.join(mask_models)}"
        if mask_models
        else "no model served here takes one (FLUX.2 [klein] and FLUX.1 models do)"
    )
    raise InvalidRequest(f"{model} takes no {param}; {elsewhere}", param=param)


def _probe_mask(request: ImageRequest, first: PlannedReference | None, limits: DecodeLimits) -> PlannedReference | None:
    """The mask's header, checked: the first image's size, within the decode limits."""
    if request.mask is None or first is None:
        return None
    info = probe_image(request.mask.data, param="mask", limits=limits)
    if (info.width, info.height) != (first.source.width, first.source.height):
        raise InvalidImage(
            f"mask is {info.width}x{info.height}; it must be the size of the first image, "
            f"{first.source.width}x{first.source.height}",
            param="mask",
        )
    return PlannedReference(request.mask, info, first.size)


def _probe(
    request: ImageRequest, caps: Capabilities, settings: Settings, *, image_to_image: bool
) -> list[PlannedReference]:
    """Each reference's header, checked: count first, then each size, then their sum (with the mask's)."""
    check_reference_count(len(request.images), caps, image_to_image=image_to_image)
    limits, planned = _limits(settings), []
    for index, raw in enumerate(request.images):
        info = probe_image(raw.data, param=raw.param, limits=limits)
        size = check_reference_shape(info.width, info.height, caps, f"image[{index}]")
        planned.append(PlannedReference(raw, info, size))
    total = sum(reference.source.pixels for reference in planned) + (planned[0].source.pixels if request.mask else 0)
    budget = settings.max_decode_megapixels * 1e6
    if total > budget:
        raise InvalidImage(
            f"the reference images hold {total / 1e6:.0f} megapixels together; this server decodes at most "
            f"{settings.max_decode_megapixels:g} per request: send smaller images (they are scaled to about "
            f"{caps.reference_max_megapixels:g} megapixel each anyway)",
            param="image",
        )
    return planned


def plan(
    request: ImageRequest,
    *,
    model: str,
    caps: Capabilities,
    operation: Operation,
    settings: Settings,
    streamable: bool = True,
    mask_models: Sequence[str] = (),
    loras: LoraCatalog | None = None,
    allowed_loras: tuple[str, ...] | None = None,
    version: str | None = None,
) -> Plan:
    """Check everything that can be known before decoding and fill in every default; raise
    :class:`InvalidRequest` otherwise.

    ``streamable`` is False for POST /v1/jobs: a generation that cannot stream. ``mask_models``: the
    served models that take a mask, named when another model is sent one. ``loras`` checks the
    adapters' names, files and families now (the engine checks them again when it runs);
    ``allowed_loras`` are the adapters the caller's key may use (None: every one), checked first:
    one outside it is :class:`PermissionDenied` before any adapter file is read. ``version``: the model
    version the request pinned (a Replicate prediction's, already checked), kept with the job.
    """
    fields = request.fields
    _check_unsupported(request)
    _check_mask_model(request, model, caps, mask_models)
    partial_images = _partial_images(fields, streamable)
    if fields.prompt is None:
        raise InvalidRequest("prompt is required", param="prompt")
    if operation == Operation.EDIT and not request.images:
        raise InvalidRequest("an edit needs at least one image (image or image[])", param="image")
    fmt = ImageFormat.parse(fields.output_format or "png")
    check_compression(fields.output_compression)
    width, height = _size(fields)
    if (width is None) != (height is None):
        raise InvalidRequest("send both width and height, or neither", param="width" if width is None else "height")
    strength = check_strength(fields.strength, masked=request.mask is not None, images=len(request.images), caps=caps)
    references = _probe(request, caps, settings, image_to_image=strength is not None)
    mask = _probe_mask(request, references[0] if references else None, _limits(settings))
    if strength is not None:  # image to image: the first image's size, as validate() will resolve it
        width, height = check_image_to_image_size(width, height, image_to_image_size(references[0].size, caps))
    elif width is None and references:  # the first reference's shape, as validate() would choose it
        width, height = nearest_valid_size(references[0].source.width, references[0].source.height, caps)
    resolved = validate(
        GenerationRequest(
            prompt=fields.prompt,
            width=width,
            height=height,
            steps=_steps(fields, caps),
            guidance=fields.guidance,
            seed=fields.seed,
            n=1 if fields.n is None else fields.n,
            safety_tolerance=fields.safety_tolerance,
            loras=tuple(LoraChoice(lora.name, lora.scale) for lora in fields.loras or ()),
        ),
        caps,
    )
    check_adapters_allowed((choice.name for choice in resolved.loras), allowed_loras)
    if loras is not None:
        loras.check(resolved.loras, caps.lora_family, model=model, allowed=allowed_loras)
    _check_output_budget(resolved.n * resolved.width * resolved.height, settings)
    spec = JobSpec(
        model=model,
        operation=operation,
        prompt=resolved.prompt,
        width=resolved.width,
        height=resolved.height,
        steps=int(resolved.steps),  # Steps.PROVIDER_CHOOSES is stored as 0
        guidance=resolved.guidance,
        seed=resolved.seed,
        n=resolved.n,
        output_format=fmt.value,
        output_compression=fields.output_compression,
        response_format=fields.response_format or "b64_json",
        references=len(references),
        input_megapixels=round(sum(w * h for w, h in (r.size for r in references)) / MEGAPIXEL, 4),
        quality=fields.quality,
        user=fields.user or fields.safety_identifier,
        partial_images=partial_images,
        safety_tolerance=resolved.safety_tolerance,
        mask=mask is not None,
        strength=strength,
        loras=resolved.loras,
        version=version,
    )
    return Plan(spec, references, mask)


def decode_references(plan: Plan, settings: Settings) -> list[Image.Image]:
    """Decode the planned references, one at a time, each straight to the size the model gets."""
    limits = _limits(settings)
    images = []
    for index, reference in enumerate(plan.references):
        image = decode_image(reference.raw.data, param=reference.raw.param, limits=limits, size=reference.size)
        if image.size != reference.size:  # a header that lied about the size
            raise InvalidImage(f"image[{index}] is not the size its header says", param=reference.raw.param)
        images.append(image)
    return images


def decode_planned_mask(plan: Plan, settings: Settings) -> Image.Image | None:
    """The planned mask decoded and read (mode L, 255 where the image changes) at the first reference's size."""
    if plan.mask is None:
        return None
    return decode_mask(plan.mask.raw.data, param="mask", limits=_limits(settings), size=plan.mask.size)


def webhook_target(fields: ImageFields, base_url: str) -> WebhookTarget | None:
    """Where the job's events go, checked; None when the request asks for no webhook."""
    events = fields.webhook_events
    if isinstance(events, str):
        events = [name.strip() for name in events.split(",") if name.strip()]
    if fields.webhook_url is None:
        if events is not None:
            raise InvalidRequest("webhook_events needs webhook_url", param="webhook_events")
        return None
    url = check_webhook_url(fields.webhook_url)
    if events is None:
        return WebhookTarget(url, WEBHOOK_EVENTS, base_url)
    unknown = [name for name in events if name not in WEBHOOK_EVENTS]
    if unknown or not events:
        raise InvalidRequest(
            f"webhook_events must name some of {', '.join(WEBHOOK_EVENTS)}; got {events!r}", param="webhook_events"
        )
    return WebhookTarget(url, tuple(name for name in WEBHOOK_EVENTS if name in events), base_url)


_LATER_FIELDS = ("safety_tolerance", "strength", "loras")
"""Fields added after request digests were first stored with jobs: an Idempotency-Key retry made
across an upgrade, without them, must still match its job."""


def request_digest(endpoint: str, request: ImageRequest) -> str:
    """A digest of what a client sent, for Idempotency-Key checks: the same request gives the same digest.

    Made from the parsed fields and the images' bytes, not the raw body, so a retry whose
    multipart boundary or JSON key order differs is still the same request.
    """
    digest = hashlib.sha256(endpoint.encode())
    fields = request.fields.model_dump(mode="json")
    for name in _LATER_FIELDS:  # unsent, they leave the digest as it was before they existed
        if fields.get(name) is None:
            fields.pop(name, None)
    digest.update(json.dumps(fields, sort_keys=True).encode())
    for image in request.images:
        digest.update(image.param.encode() + b"\0" + hashlib.sha256(image.data).digest())
    if request.mask is not None:  # nothing added without one: digests stored before masks still match
        digest.update(b"mask\0" + hashlib.sha256(request.mask.data).digest())
    return digest.hexdigest()
