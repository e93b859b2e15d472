"""The images endpoints' work: parse, resolve, queue a job, wait for it, answer in OpenAI's shape.

Handlers never touch a pipeline: they queue a job and wait for its completion event. Everything
slow or CPU-bound (decoding references, reading files, base64, JSON) runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from dataclasses import dataclass

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from fluxserve.accounts.keys import Caller
from fluxserve.api import sse
from fluxserve.api.deps import Services
from fluxserve.api.errors import mark_job_started
from fluxserve.api.image_stream import image_stream
from fluxserve.api.parsing import ImageRequest, read_image_request
from fluxserve.api.protocol.images import ImageData, ImageFields, ImagesResponse, ImageUsage
from fluxserve.api.requests import (
    Plan,
    decode_planned_mask,
    decode_references,
    plan,
    request_digest,
    webhook_target,
)
from fluxserve.engines.aliases import resolve
from fluxserve.errors import InvalidRequest
from fluxserve.imaging.encode import ImageFormat
from fluxserve.jobs.models import Job, Operation, WebhookTarget
from fluxserve.jobs.service import JobService, Submitted
from fluxserve.jobs.store import Idempotency
from fluxserve.jobs.views import image_url
from fluxserve.settings import Settings
from fluxserve.storage.files import FileStore
from fluxserve.storage.signing import UrlSigner

log = logging.getLogger("fluxserve.api")


IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass(frozen=True)
class Accepted:
    """A request that became a job (or found the job an earlier identical request made)."""

    submitted: Submitted
    fields: ImageFields

    @property
    def job(self) -> Job:
        return self.submitted.job

    def headers(self) -> dict[str, str]:
        headers = {"x-job-id": self.job.id}
        if self.submitted.replayed:
            headers["idempotent-replayed"] = "true"
        return headers


async def accept(
    request: Request, operation: Operation, caller: Caller, services: Services, *, streamable: bool = True
) -> Accepted:
    """Parse, check and queue ``caller``'s images request (``streamable``: False for POST /v1/jobs).

    Everything that can refuse the request from its fields and its images' headers (count, sizes,
    megapixels, the key's adapters, rate, concurrency and quota, the queue) is checked before any pixel is
    decoded; a request that gets that far counts toward the key's rate.
    """
    parsed = await read_image_request(request, services.settings)
    return await accept_parsed(request, parsed, operation, caller, services, streamable=streamable)


async def accept_parsed(
    request: Request,
    parsed: ImageRequest,
    operation: Operation,
    caller: Caller,
    services: Services,
    *,
    streamable: bool = True,
    webhook: WebhookTarget | None = None,
    refusal_as_job: bool = False,
    version: str | None = None,
) -> Accepted:
    """:func:`accept` for a request another API surface (BFL, Workers AI) has already read into fields;
    ``webhook``: that surface's own webhook, instead of one from the fields; ``refusal_as_job``: references
    the content filter refuses make a failed job instead of a 400 (BFL reports them when polled);
    ``version``: the model version the request pinned (Replicate's), kept with the job."""
    settings, jobs = services.settings, services.jobs
    key = idempotency_key(request)
    model = parsed.fields.model or jobs.default_model
    caps = jobs.capabilities(model)
    planned = await asyncio.to_thread(
        plan,
        parsed,
        model=model,
        caps=caps,
        operation=operation,
        settings=settings,
        streamable=streamable,
        mask_models=jobs.mask_models(),
        loras=services.loras,
        allowed_loras=caller.allowed_loras,
        version=version,
    )
    webhook = webhook or webhook_target(parsed.fields, base_url(request, settings))
    idempotency = None
    if key is not None:
        endpoint = request.url.path if version is None else f"{request.url.path}:{version}"
        idempotency = Idempotency(key, await asyncio.to_thread(request_digest, endpoint, parsed))
    earlier = await asyncio.to_thread(jobs.precheck, planned.spec, idempotency=idempotency, caller=caller)
    if earlier is not None:
        submitted = Submitted(earlier, replayed=True)
    else:
        references, mask = await _decoded(services, planned)
        submitted = await asyncio.to_thread(
            jobs.submit,
            planned.spec,
            references,
            mask=mask,
            webhook=webhook,
            idempotency=idempotency,
            caller=caller,
            rate_counted=True,
            refusal_as_job=refusal_as_job,
        )
    mark_job_started(request, submitted.job.id)
    return Accepted(submitted, parsed.fields)


async def _decoded(services: Services, planned: Plan) -> tuple[list[Image.Image], Image.Image | None]:
    """The planned references (and mask) decoded, waiting for one of the server's decode slots first."""
    if not planned.references:
        return [], None
    async with services.decode_slots:
        references = await asyncio.to_thread(decode_references, planned, services.settings)
        mask = await asyncio.to_thread(decode_planned_mask, planned, services.settings)
        return references, mask


def served_model(name: str, services: Services) -> str | None:
    """The served model a provider's model name (``flux-2-pro``) or a served name means; None if neither."""
    return resolve(name, services.aliases, services.jobs.workers)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 visible ASCII characters, for example a UUID", param="Idempotency-Key"
        )
    return key


async def serve_images(request: Request, operation: Operation, caller: Caller, services: Services) -> Response:
    accepted = await accept(request, operation, caller, services)
    job, jobs, settings = accepted.job, services.jobs, services.settings
    # A client that sent an Idempotency-Key means to come back for its job: leaving does not cancel it.
    cancel_if_left = job.idempotency_key is None
    if accepted.fields.stream:
        events = image_stream(
            jobs,
            services.bus,
            services.files,
            job,
            keepalive=settings.sse_keepalive_seconds,
            cancel_if_left=cancel_if_left,
        )
        return StreamingResponse(events, media_type="text/event-stream", headers={**sse.HEADERS, **accepted.headers()})
    finished = await wait_unless_disconnected(request, jobs, job.id, cancel_if_left=cancel_if_left)
    if finished is None:
        return Response(status_code=499)  # nobody is listening any more
    raise_if_unsuccessful(finished)
    body = await asyncio.to_thread(
        render_images_response, finished, services.files, services.signer, base_url(request, settings)
    )
    return Response(body, media_type="application/json", headers=accepted.headers())


async def wait_unless_disconnected(
    request: Request, service: JobService, job_id: str, *, cancel_if_left: bool
) -> Job | None:
    """The finished job; or None when the client left first (then, with ``cancel_if_left``, its
    job is canceled if it has not started)."""
    waiting = asyncio.ensure_future(service.wait(job_id))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if waiting.done():
        return waiting.result()
    waiting.cancel()
    if cancel_if_left and await asyncio.to_thread(service.cancel_if_queued, job_id):
        log.info("job %s canceled: its client disconnected before it started", job_id)
    else:
        log.info("job %s goes on: its client disconnected, the result will be kept", job_id)
    return None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def raise_if_unsuccessful(job: Job) -> None:
    # Answered with the status of the error that failed the job (its code's, api/errors.status_of).
    failure = job.failure()
    if failure is not None:
        raise failure


def base_url(request: Request, settings: Settings) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


def render_images_response(job: Job, files: FileStore, signer: UrlSigner, base_url: str) -> bytes:
    """The OpenAI-shaped body for a succeeded job (reads its files for ``b64_json``)."""
    spec = job.spec
    assert job.usage is not None
    data = []
    for output in job.outputs:
        item = ImageData(revised_prompt=spec.prompt, prompt=spec.prompt, seed=output.seed)
        if spec.response_format == "url":
            item.url = image_url(base_url, job, output.index, signer)
        else:
            image = files.read_output(job.id, output.index, ImageFormat(spec.output_format))
            item.b64_json = base64.b64encode(image).decode("ascii")
        data.append(item)
    body = ImagesResponse(
        id=job.id,
        object="image.edit" if spec.operation == Operation.EDIT else "image.generation",
        created=int(job.created_at),
        model=spec.model,
        data=data,
        output_format=ImageFormat(spec.output_format).value,
        size=f"{spec.width}x{spec.height}",
        quality=spec.quality,
        usage=ImageUsage(**job.usage.to_json()),
    )
    return json.dumps(body.model_dump(exclude_none=True), separators=(",", ":")).encode()
