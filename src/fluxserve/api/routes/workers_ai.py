"""Cloudflare Workers AI's run endpoint over the job service, for clients of ``@cf/black-forest-labs/...``.

``POST /client/v4/accounts/{account}/ai/run/@cf/black-forest-labs/{model}``: multipart (FLUX.2:
``prompt``, ``input_image_0..3``, ``steps``, ``guidance``, ``width``, ``height``, ``seed``) or JSON
(FLUX.1 [schnell]: ``prompt``, ``steps``, ``seed``), with ``Authorization: Bearer <key>``. Workers
AI's run is synchronous: the request becomes a durable job (same checks, keys, quotas and events as
every other surface) and the answer waits for it. The model name goes through the alias table; the
account segment is not checked (the key says whose job it is). Errors come in the v4 envelope with
Cloudflare's error codes and fluxserve's status codes.
"""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fluxserve.api.auth import CallerDep
from fluxserve.api.deps import ServicesDep
from fluxserve.api.errors import use_error_shape
from fluxserve.api.openapi import error_responses
from fluxserve.api.parsing import ImageRequest, read_image_request
from fluxserve.api.protocol.workers_ai import FIELDS, IMAGE_FIELDS, RunEnvelope, RunResult, error_envelope
from fluxserve.api.serving import accept_parsed, raise_if_unsuccessful, served_model, wait_unless_disconnected
from fluxserve.errors import InvalidRequest, UnknownModel
from fluxserve.imaging.encode import ImageFormat
from fluxserve.jobs.models import Operation


async def _cloudflare_errors(request: Request) -> None:
    use_error_shape(request, error_envelope)


router = APIRouter(tags=["workers-ai"], dependencies=[Depends(_cloudflare_errors)])


def check_fields(parsed: ImageRequest) -> None:
    """Only what Workers AI's FLUX models take: nothing else is silently dropped."""
    sent = parsed.fields.model_dump(exclude_none=True)
    unknown = sorted(set(sent) - FIELDS)
    if unknown:
        raise InvalidRequest(
            f"unknown field {unknown[0]!r}; Workers AI takes {', '.join(sorted(FIELDS))}", param=unknown[0]
        )
    for image in parsed.images:
        if image.param not in IMAGE_FIELDS:
            raise InvalidRequest(f"reference images go in {', '.join(IMAGE_FIELDS)}", param=image.param)
    if parsed.mask is not None:
        raise InvalidRequest("Workers AI takes no mask", param="mask")


def output_format(model: str) -> ImageFormat:
    """PNG, as FLUX.2 on Workers AI answers; JPEG for FLUX.1 [schnell], as it does there."""
    return ImageFormat.JPEG if "schnell" in model else ImageFormat.PNG


@router.post(
    "/client/v4/accounts/{account}/ai/run/@cf/black-forest-labs/{model}",
    summary="Workers AI: run a FLUX model and answer with the image (synchronous)",
    response_model=RunEnvelope,
    responses=error_responses(401, 400, 404, 413, 415, 429, 503, body=RunEnvelope),
)
async def run(account: str, model: str, request: Request, who: CallerDep, services: ServicesDep) -> Response:
    served = served_model(model, services)
    if served is None:
        raise UnknownModel(f"no model @cf/black-forest-labs/{model} here; GET /v1/models lists what is served")
    parsed = await read_image_request(request, services.settings)
    check_fields(parsed)
    fmt = output_format(model)
    fields = parsed.fields.model_copy(update={"model": served, "output_format": fmt.value})
    accepted = await accept_parsed(
        request, ImageRequest(fields, parsed.images), Operation.GENERATION, who, services, streamable=False
    )
    jobs = services.jobs
    cancel_if_left = accepted.job.idempotency_key is None
    finished = await wait_unless_disconnected(request, jobs, accepted.job.id, cancel_if_left=cancel_if_left)
    if finished is None:
        return Response(status_code=499)  # nobody is listening any more
    raise_if_unsuccessful(finished)
    image = await asyncio.to_thread(services.files.read_output, finished.id, 0, fmt)
    envelope = RunEnvelope(result=RunResult(image=base64.b64encode(image).decode("ascii")), success=True)
    return JSONResponse(envelope.model_dump(mode="json"), headers=accepted.headers())
