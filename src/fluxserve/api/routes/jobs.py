"""The async jobs API: submit, poll, watch (SSE), cancel, list and delete jobs.

POST /v1/jobs takes the same body as /v1/images/generations and answers at once with 202 and
the job; ``Prefer: wait=N`` holds the answer up to N seconds for the finished job instead.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from fluxserve.accounts.keys import Caller
from fluxserve.api import sse
from fluxserve.api.auth import CallerDep
from fluxserve.api.deps import EventsDep, JobsDep, ServicesDep, SettingsDep
from fluxserve.api.job_events import job_event_stream, seen_the_end
from fluxserve.api.openapi import error_responses
from fluxserve.api.parsing import reject_unknown_query
from fluxserve.api.protocol.images import images_request_body
from fluxserve.api.protocol.jobs import JobList
from fluxserve.api.protocol.query import whole_number_query
from fluxserve.api.serving import accept, base_url
from fluxserve.errors import InvalidRequest, JobFinished, NotFound
from fluxserve.jobs.models import Job, JobStatus, Operation
from fluxserve.jobs.service import JobService
from fluxserve.jobs.views import JobView, view_json
from fluxserve.numbers import parse_int
from fluxserve.settings import Settings
from fluxserve.storage.files import is_job_id

router = APIRouter(tags=["jobs"])

MAX_PAGE = 100
MAX_WAIT_TEXT = 999_999
"""The largest N of ``Prefer: wait=N`` read (then capped at max_wait_seconds)."""
CANCEL_WAIT_SECONDS = 10.0
"""How long a cancel request waits for a running job to stop before answering 202."""


def _errors(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return error_responses(401, *statuses)


_NOT_FOUND = (404, "No such job.")


def wait_preference(request: Request, limit: float) -> int | None:
    """The N of a ``Prefer: wait=N`` header (RFC 7240), capped at ``limit``; None without one."""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            token = preference.split(";")[0].strip().lower()
            if not token.startswith("wait"):
                continue  # other preferences are not ours to act on (RFC 7240)
            name, equals, seconds = token.replace(" ", "").partition("=")
            if name != "wait" or not equals:
                raise InvalidRequest(f"Prefer: {token!r} should be wait=SECONDS, e.g. wait=30", param="Prefer")
            return min(parse_int(seconds, param="Prefer", low=0, high=MAX_WAIT_TEXT), int(limit))
    return None


PageSize = Annotated[
    int,
    whole_number_query("limit", 1, MAX_PAGE),
    Query(description=f"Jobs per page, 1 to {MAX_PAGE}.", json_schema_extra={"minimum": 1, "maximum": MAX_PAGE}),
]


def _json(view: JobView, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(view_json(view), status_code=status, headers=headers)


def _check_id(job_id: str) -> None:
    """A path that cannot name a job is a 404 before any lookup."""
    if not is_job_id(job_id):
        raise NotFound(f"no job {job_id!r}")


async def _job(jobs: JobService, job_id: str, who: Caller) -> Job:
    """The caller's job; someone else's is a 404, as if it did not exist."""
    _check_id(job_id)
    return await asyncio.to_thread(jobs.owned, job_id, who.owner)


async def _view(jobs: JobService, settings: Settings, request: Request, job: Job) -> JobView:
    return await asyncio.to_thread(jobs.view, job, base_url(request, settings))


@router.post(
    "/v1/jobs",
    summary="Submit a generation as a job; answers at once (202) or, with Prefer: wait=N, when done",
    response_model=JobView,
    status_code=202,
    responses={
        200: {"model": JobView, "description": "Prefer: wait=N, and the job finished in time."},
        **_errors(
            (400, "Invalid request: the message says what to send instead; param names the field."),
            (404, "Unknown model."),
            (409, "The Idempotency-Key was used for a different request."),
            (413, "The body or an upload is too large."),
            (415, "The body is neither JSON nor multipart/form-data."),
            (429, "The model's queue is full, or the key's rate, concurrency or quota is used up; see Retry-After."),
            (503, "The model is loading or failed to load; see Retry-After."),
        ),
    },
    openapi_extra={"requestBody": images_request_body(required_images=False)},
)
async def submit_job(request: Request, who: CallerDep, services: ServicesDep) -> Response:
    jobs, settings = services.jobs, services.settings
    wait = wait_preference(request, settings.max_wait_seconds)
    accepted = await accept(request, Operation.GENERATION, who, services, streamable=False)
    headers = accepted.headers()
    job = accepted.job
    if wait is not None:
        job = await jobs.wait(job.id, timeout=wait)
        headers["preference-applied"] = f"wait={wait}"
    view = await _view(jobs, settings, request, job)
    headers["location"] = view.urls.get
    return _json(view, 200 if job.status.finished else 202, headers)


@router.get(
    "/v1/jobs",
    summary="Job history, newest first",
    response_model=JobList,
    responses=_errors((400, "A bad filter or cursor.")),
)
async def list_jobs(
    request: Request,
    who: CallerDep,
    jobs: JobsDep,
    settings: SettingsDep,
    limit: PageSize = 20,
    cursor: str | None = None,
    status: JobStatus | None = None,
    model: str | None = None,
) -> Response:
    reject_unknown_query(request, {"limit", "cursor", "status", "model"})
    page = await asyncio.to_thread(jobs.history, who.owner, limit=limit, cursor=cursor, status=status, model=model)
    views = [await _view(jobs, settings, request, job) for job in page.jobs]
    body = JobList(data=views, has_more=page.next_cursor is not None, next_cursor=page.next_cursor)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True))


@router.get(
    "/v1/jobs/{job_id}",
    summary="A job: status, queue position or progress, error, images and usage",
    response_model=JobView,
    responses=_errors(_NOT_FOUND),
)
async def get_job(job_id: str, request: Request, who: CallerDep, jobs: JobsDep, settings: SettingsDep) -> Response:
    return _json(await _view(jobs, settings, request, await _job(jobs, job_id, who)), 200)


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="A job's events as Server-Sent Events (reconnect with Last-Event-ID)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "queued, started, progress, then the end."},
        204: {"description": "Last-Event-ID says the watcher already has the job's final event."},
        **_errors(_NOT_FOUND),
    },
)
async def job_events(
    job_id: str, request: Request, who: CallerDep, jobs: JobsDep, bus: EventsDep, settings: SettingsDep
) -> Response:
    job = await _job(jobs, job_id, who)
    last_event_id = request.headers.get("last-event-id") or None
    if await asyncio.to_thread(seen_the_end, bus, job, last_event_id):
        return Response(status_code=204)  # tells EventSource clients to stop reconnecting
    stream = job_event_stream(
        jobs, bus, job.id, base_url(request, settings), last_event_id, settings.sse_keepalive_seconds
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers=sse.HEADERS)


async def _cancel(request: Request, job_id: str, who: Caller, jobs: JobService, settings: Settings) -> Response:
    _check_id(job_id)
    job = await asyncio.to_thread(jobs.cancel, job_id, who.owner)  # NotFound, JobFinished
    if not job.status.finished:  # running: it stops at its next step
        job = await jobs.wait(job_id, timeout=CANCEL_WAIT_SECONDS)
    if job.status.finished and job.status is not JobStatus.CANCELED:
        raise JobFinished(f"job {job_id} {job.status.value} before it could stop; there is nothing to cancel")
    return _json(await _view(jobs, settings, request, job), 200 if job.status.finished else 202)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    summary="Cancel a job: a queued one never starts, a running one stops at its next step",
    response_model=JobView,
    responses={
        202: {"model": JobView, "description": "Still stopping; watch the job for canceled."},
        **_errors(_NOT_FOUND, (409, "The job has already finished.")),
    },
)
async def cancel_job(job_id: str, request: Request, who: CallerDep, jobs: JobsDep, settings: SettingsDep) -> Response:
    return await _cancel(request, job_id, who, jobs, settings)


@router.delete(
    "/v1/jobs/{job_id}",
    summary="Delete a finished job and its images; a job that has not finished is canceled instead",
    status_code=204,
    response_model=None,
    responses={
        200: {"model": JobView, "description": "The job had not finished: it is now canceled (delete it again)."},
        202: {"model": JobView, "description": "The job is stopping; delete it once it is canceled."},
        **_errors(_NOT_FOUND),
    },
)
async def delete_job(job_id: str, request: Request, who: CallerDep, jobs: JobsDep, settings: SettingsDep) -> Response:
    job = await _job(jobs, job_id, who)
    if not job.status.finished:
        return await _cancel(request, job_id, who, jobs, settings)
    await asyncio.to_thread(jobs.delete, job_id, who.owner)
    return Response(status_code=204)
