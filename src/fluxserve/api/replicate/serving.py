"""A Replicate prediction request turned into a job: the model, the input, the images, the webhook.

The job goes through :func:`fluxserve.api.serving.accept_parsed`, so it meets the same checks,
keys, quotas and queue as a request to /v1/jobs; only the wire format differs.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from fluxserve.accounts.keys import Caller
from fluxserve.api.deps import Services
from fluxserve.api.parsing import RawImage, json_object_body
from fluxserve.api.protocol.replicate import PredictionRequest, WebhookEvent
from fluxserve.api.replicate.inputs import image_request, parse_input
from fluxserve.api.replicate.sources import Sources
from fluxserve.api.replicate.versions import Reference, reference
from fluxserve.api.serving import Accepted, accept_parsed, base_url
from fluxserve.errors import InvalidRequest, InvalidVersion, UnknownModel, UnsupportedMediaType
from fluxserve.imaging.decode import DecodeLimits, ImageInfo, probe_image
from fluxserve.jobs.models import JobEventType, Operation, WebhookTarget
from fluxserve.storage.uploads import Uploads
from fluxserve.webhooks.urls import check_webhook_url

EVENTS: dict[WebhookEvent, tuple[JobEventType, ...]] = {
    "start": (JobEventType.STARTED,),
    "output": (JobEventType.COMPLETED,),  # an image's one output exists once it has succeeded
    "logs": (JobEventType.PROGRESS,),
    "completed": (JobEventType.COMPLETED, JobEventType.FAILED, JobEventType.CANCELED),
}
ORDER = (
    JobEventType.STARTED,
    JobEventType.PROGRESS,
    JobEventType.COMPLETED,
    JobEventType.FAILED,
    JobEventType.CANCELED,
)


def uploads(services: Services) -> Uploads:
    return Uploads(services.files.blobs, services.clock, services.settings.replicate_file_ttl_seconds)


async def read_body(request: Request) -> PredictionRequest:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"content type {media_type or '(none)'!r} is not accepted; send application/json")
    return json_object_body(await request.body(), PredictionRequest)


def reference_of(body: PredictionRequest, path_model: str | None, services: Services) -> Reference:
    """The served model the prediction names, and the version it pins: from the path, ``model`` or
    ``version``. What ``version`` names must be served (InvalidVersion, a 422, as on Replicate); a model
    named in the path or as ``model`` that is not served is UnknownModel (a 404)."""
    named = [name for name in (path_model, body.model, body.version) if name is not None]
    if not named:
        raise InvalidRequest(
            "send version (or model): the model to run, e.g. black-forest-labs/flux-2-dev", param="version"
        )
    if len(named) > 1:
        raise InvalidRequest("name the model once: in the path, as model or as version", param="version")
    if body.version is None:
        return reference(named[0], services)
    try:
        return reference(body.version, services)
    except UnknownModel as unknown:
        raise InvalidVersion(str(unknown)) from None


def webhook_of(body: PredictionRequest, base: str) -> WebhookTarget | None:
    if body.webhook is None:
        if body.webhook_events_filter is not None:
            raise InvalidRequest("webhook_events_filter needs webhook", param="webhook_events_filter")
        return None
    url = check_webhook_url(body.webhook)
    wanted = body.webhook_events_filter if body.webhook_events_filter is not None else list(EVENTS)
    if not wanted:
        raise InvalidRequest(
            "webhook_events_filter must name some of start, output, logs, completed", param="webhook_events_filter"
        )
    chosen = {event for name in wanted for event in EVENTS[name]}
    return WebhookTarget(url, tuple(event for event in ORDER if event in chosen), base, shape="replicate")


async def accept_prediction(
    request: Request, body: PredictionRequest, path_model: str | None, who: Caller, services: Services
) -> Accepted:
    settings, jobs = services.settings, services.jobs
    named = reference_of(body, path_model, services)
    model = named.model
    flux = parse_input(body.input)
    caps = jobs.capabilities(model)
    base = base_url(request, settings)
    webhook = webhook_of(body, base)
    sources = Sources(base, who.owner, uploads(services), jobs, services.files, services.signer, settings)
    if len(flux.input_images or []) > settings.max_uploads:
        count = len(flux.input_images or [])
        raise InvalidRequest(
            f"{count} input images sent; the limit is {settings.max_uploads}", param="input.input_images"
        )
    images: list[RawImage] = []
    for index, text in enumerate(flux.input_images or []):
        images.append(await asyncio.to_thread(sources.read, text, f"input.input_images[{index}]"))
    first = await asyncio.to_thread(_probe_first, images, settings.max_upload_bytes, settings.max_upload_megapixels)
    parsed = image_request(flux, model=model, caps=caps, images=images, first=first)
    operation = Operation.EDIT if images else Operation.GENERATION
    return await accept_parsed(
        request, parsed, operation, who, services, webhook=webhook, streamable=False, version=named.version
    )


def _probe_first(images: list[RawImage], max_bytes: int, max_megapixels: float) -> ImageInfo | None:
    if not images:
        return None
    limits = DecodeLimits(max_bytes=max_bytes, max_pixels=int(max_megapixels * 1e6))
    return probe_image(images[0].data, param=images[0].param, limits=limits)
