"""Black Forest Labs' API over the job service: ``POST /v1/{model}`` submits, ``GET /v1/get_result`` polls.

A thin adapter: a BFL body becomes the same checked images request the OpenAI and jobs APIs make
(same keys, quotas, jobs, events and webhooks); only the wire format differs. The task id is the
job id, so the jobs API (``GET /v1/jobs/{id}``, ``.../events``, ``.../cancel``) works on it too.
BFL has no cancel: a task canceled through the jobs API polls as ``Error``.

``/v1/{model}`` answers only for the names the alias table knows (``flux-2-pro``...) and the served
models' own names; every other ``/v1/...`` path is left to its own route. Errors are BFL's
``{"detail": message}`` with fluxserve's status codes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import Scope

from fluxserve.api.auth import CallerDep
from fluxserve.api.deps import Services, ServicesDep
from fluxserve.api.errors import use_error_shape
from fluxserve.api.openapi import error_responses
from fluxserve.api.parsing import image_request_from_json, json_object_body, reject_unknown_query
from fluxserve.api.protocol.bfl import BflError, BflPoll, BflRequest, BflResult, BflSubmitted
from fluxserve.api.serving import accept_parsed, base_url, served_model
from fluxserve.engines.validation import MEGAPIXEL
from fluxserve.errors import ErrorCode, InvalidRequest, NotFound, UnknownModel
from fluxserve.jobs.models import Job, JobEventType, JobStatus, Operation, WebhookTarget
from fluxserve.jobs.views import image_url
from fluxserve.storage.files import is_job_id
from fluxserve.webhooks.payload import bfl_failed_status
from fluxserve.webhooks.urls import check_webhook_url

BFL_DEFAULT_SAFETY_TOLERANCE = 2
BFL_DEFAULT_FORMAT = "jpeg"
TASK_ENDS = (JobEventType.COMPLETED, JobEventType.FAILED, JobEventType.CANCELED)
"""BFL posts a task's end only."""


def bfl_error(code: ErrorCode, message: str, status: int) -> dict[str, object]:
    """BFL's error body."""
    return {"detail": message}


async def _bfl_errors(request: Request) -> None:
    use_error_shape(request, bfl_error)


router = APIRouter(tags=["bfl"], dependencies=[Depends(_bfl_errors)])


class KnownModelRoute(APIRoute):
    """``/v1/{model}`` that matches only a model name the server knows (an alias or a served model)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.NONE:
            return match, child
        model = child.get("path_params", {}).get("model", "")
        if served_model(model, scope["app"].state.services) is None:
            return Match.NONE, {}
        return match, child


def to_fields(body: BflRequest) -> dict[str, Any]:
    """The BFL body as the images API's JSON fields (references stay in BFL's field names)."""
    if body.prompt_upsampling:
        raise InvalidRequest(
            "fluxserve never rewrites prompts; send prompt_upsampling false or omit it", param="prompt_upsampling"
        )
    fields: dict[str, Any] = body.model_dump(
        include={"prompt", "seed", "width", "height", "steps", "guidance"}, exclude_none=True
    )
    fields |= body.references()
    fields["output_format"] = body.output_format or BFL_DEFAULT_FORMAT
    fields["response_format"] = "url"
    return fields


def bfl_webhook(body: BflRequest, base: str) -> WebhookTarget | None:
    """BFL's webhook: the task's end only, in BFL's body, signed with the client's webhook_secret too."""
    if body.webhook_url is None:
        if body.webhook_secret is not None:
            raise InvalidRequest("webhook_secret needs webhook_url", param="webhook_secret")
        return None
    url = check_webhook_url(body.webhook_url)
    return WebhookTarget(url, TASK_ENDS, base, shape="bfl", secret=body.webhook_secret)


def _safety(fields: dict[str, Any], body: BflRequest, takes_it: bool) -> None:
    """safety_tolerance goes to models that take it; elsewhere only BFL's default (2) is accepted."""
    value = body.safety_tolerance
    if value is None:
        return
    if takes_it:
        fields["safety_tolerance"] = value
    elif value != BFL_DEFAULT_SAFETY_TOLERANCE:
        raise InvalidRequest(
            f"this model has no safety filter setting; send safety_tolerance {BFL_DEFAULT_SAFETY_TOLERANCE} "
            "(BFL's default) or omit it",
            param="safety_tolerance",
        )


@router.get(
    "/v1/get_result",
    summary="BFL: a task's status, and its image's signed URL once Ready",
    response_model=BflPoll,
    responses=error_responses(401, body=BflError),
)
async def get_result(request: Request, who: CallerDep, services: ServicesDep, id: str = "") -> Response:
    reject_unknown_query(request, {"id"})
    jobs = services.jobs
    job = None
    if is_job_id(id):
        try:
            job = await asyncio.to_thread(jobs.owned, id, who.owner)
        except NotFound:
            job = None
    if job is None:  # someone else's task is as unknown as one that never was
        return _poll_json(BflPoll(id=id, status="Task not found"))
    return _poll_json(poll_answer(job, services, base_url(request, services.settings)))


def poll_answer(job: Job, services: Services, base: str) -> BflPoll:
    """A job as BFL's poll answer."""
    if job.status is JobStatus.SUCCEEDED:
        output = job.outputs[0]
        started = job.started_at or job.created_at
        ended = job.finished_at or started
        result = BflResult(
            sample=image_url(base, job, output.index, services.signer),
            prompt=job.spec.prompt,
            seed=output.seed,
            start_time=started,
            end_time=ended,
            duration=round(ended - started, 3),
        )
        return BflPoll(id=job.id, status="Ready", result=result, progress=1.0)
    if job.status.finished:
        failure = job.failure()
        assert failure is not None  # a finished job that did not succeed failed or was canceled
        status = bfl_failed_status(failure)
        return BflPoll(id=job.id, status=status, details={"code": failure.code, "message": str(failure)})
    progress = services.jobs.progress(job.id) if job.status is JobStatus.RUNNING else None
    fraction = None if progress is None else round(progress.step / max(1, progress.total_steps), 3)
    return BflPoll(id=job.id, status="Pending", progress=fraction)


def _poll_json(poll: BflPoll) -> JSONResponse:
    return JSONResponse(poll.model_dump(mode="json"))


async def submit(model: str, request: Request, who: CallerDep, svc: ServicesDep) -> Response:
    served = served_model(model, svc)
    if served is None:  # the route matched it a moment ago; the table does not change
        raise UnknownModel(f"no model {model!r} here; GET /v1/models lists what is served")
    body = json_object_body(await request.body(), BflRequest)
    fields = to_fields(body)
    _safety(fields, body, svc.jobs.capabilities(served).safety_tolerance)
    fields["model"] = served
    parsed = await asyncio.to_thread(image_request_from_json, fields, svc.settings)
    base = base_url(request, svc.settings)
    webhook = bfl_webhook(body, base)
    accepted = await accept_parsed(
        request, parsed, Operation.GENERATION, who, svc, streamable=False, webhook=webhook, refusal_as_job=True
    )
    spec = accepted.job.spec
    answer = BflSubmitted(
        id=accepted.job.id,
        polling_url=f"{base}/v1/get_result?id={accepted.job.id}",
        input_mp=spec.input_megapixels,
        output_mp=round(spec.width * spec.height / MEGAPIXEL, 4),
    )
    return JSONResponse(answer.model_dump(mode="json"), headers=accepted.headers())


router.add_api_route(
    "/v1/{model}",
    submit,
    methods=["POST"],
    summary="BFL: submit a task for a model by its BFL name (flux-2-pro, flux-2-dev...); poll polling_url",
    response_model=BflSubmitted,
    responses=error_responses(401, 400, 404, 413, 429, 503, body=BflError),
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": BflRequest.model_json_schema()}}}
    },
    route_class_override=KnownModelRoute,
)
