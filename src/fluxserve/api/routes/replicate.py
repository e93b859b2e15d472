"""Replicate's HTTP API for FLUX.2 models: predictions and files, over the job service.

A Replicate client changes only its base URL. Predictions are jobs (ids, keys, quotas, webhooks
and retention are the jobs API's); errors are problem details (``{"title", "detail", "status"}``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from fluxserve.api import sse
from fluxserve.api.auth import CallerDep
from fluxserve.api.deps import EventsDep, JobsDep, ServicesDep, SettingsDep
from fluxserve.api.openapi import problem_responses
from fluxserve.api.parsing import reject_unknown_query
from fluxserve.api.protocol.replicate import (
    FileObject,
    FileUrls,
    ModelObject,
    Prediction,
    PredictionPage,
    PredictionRequest,
    VersionObject,
    VersionPage,
)
from fluxserve.api.replicate.predictions import iso, prediction_json
from fluxserve.api.replicate.serving import accept_prediction, read_body, uploads
from fluxserve.api.replicate.stream import prediction_stream
from fluxserve.api.replicate.versions import model_object, served_version, version_object, version_page
from fluxserve.api.routes.jobs import _cancel as cancel_job
from fluxserve.api.routes.jobs import _job as owned_job
from fluxserve.api.serving import base_url
from fluxserve.errors import InvalidRequest, PayloadTooLarge
from fluxserve.jobs.models import Job
from fluxserve.jobs.service import JobService
from fluxserve.numbers import parse_int
from fluxserve.settings import Settings
from fluxserve.storage.uploads import Upload

router = APIRouter(tags=["replicate"])

PAGE_SIZE = 100
DEFAULT_WAIT_SECONDS = 60
"""``Prefer: wait`` without a number: Replicate's longest hold."""


def replicate_wait(request: Request, limit: float) -> int | None:
    """``Prefer: wait`` (60 s) or ``wait=N`` (1-60 s), capped at ``limit``; None without one."""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            token = preference.split(";")[0].strip().lower().replace(" ", "")
            if token == "wait":
                return min(DEFAULT_WAIT_SECONDS, int(limit))
            if token.startswith("wait="):
                return min(parse_int(token[5:], param="Prefer", low=1, high=DEFAULT_WAIT_SECONDS), int(limit))
    return None


async def _prediction(jobs: JobService, settings: Settings, request: Request, job: Job) -> dict[str, Any]:
    base = base_url(request, settings)
    view = await asyncio.to_thread(jobs.view, job, base)
    return prediction_json(view, base, job.spec.version)


async def _create(request: Request, who: CallerDep, services: ServicesDep, path_model: str | None) -> Response:
    jobs, settings = services.jobs, services.settings
    wait = replicate_wait(request, settings.max_wait_seconds)
    body = await read_body(request)
    accepted = await accept_prediction(request, body, path_model, who, services)
    job = accepted.job
    headers = accepted.headers()
    if wait is not None:
        job = await jobs.wait(job.id, timeout=wait)
        headers["preference-applied"] = f"wait={wait}"
    answer = await _prediction(jobs, settings, request, job)
    if wait is not None and not job.status.finished:
        # As Replicate answers a wait that ran out: "starting" tells its clients to poll urls.get.
        answer["status"] = "starting"
    headers["location"] = answer["urls"]["get"]
    return JSONResponse(answer, status_code=201, headers=headers)


_NOT_FOUND = (404, "No such prediction (or another key's).")
_NO_FILE = (404, "No such file, another key's, or expired.")
_CREATE: dict[str, Any] = {
    "response_model": Prediction,
    "status_code": 201,
    "responses": problem_responses(
        401,
        (400, "A bad body, webhook or Prefer header; param names the field."),
        (404, "The model in the path or in model is not served here (nor an alias of one)."),
        (409, "The Idempotency-Key was used for a different request."),
        (413, "An input image is too large."),
        (415, "The body is not JSON."),
        (
            422,
            "An input field is unknown or invalid (param input.<field>); or version names no served model's"
            " version (param version, title: Invalid version or not permitted).",
        ),
        429,
        503,
    ),
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictionRequest.model_json_schema()}},
        }
    },
}


@router.post("/v1/predictions", summary="Create a prediction (Replicate): version or model names the model", **_CREATE)
async def create_prediction(request: Request, who: CallerDep, services: ServicesDep) -> Response:
    return await _create(request, who, services, None)


@router.post(
    "/v1/models/{owner}/{name}/predictions",
    summary="Create a prediction of an official model (Replicate), e.g. black-forest-labs/flux-2-dev",
    **_CREATE,
)
async def create_model_prediction(
    owner: str, name: str, request: Request, who: CallerDep, services: ServicesDep
) -> Response:
    return await _create(request, who, services, f"{owner}/{name}")


@router.get(
    "/v1/predictions",
    summary="Your predictions, newest first (Replicate's pages)",
    response_model=PredictionPage,
    responses=problem_responses(401, (400, "A bad cursor.")),
)
async def list_predictions(
    request: Request, who: CallerDep, jobs: JobsDep, settings: SettingsDep, cursor: str | None = None
) -> Response:
    reject_unknown_query(request, {"cursor"})
    page = await asyncio.to_thread(jobs.history, who.owner, limit=PAGE_SIZE, cursor=cursor)
    results = [await _prediction(jobs, settings, request, job) for job in page.jobs]
    base = base_url(request, settings)
    following = None if page.next_cursor is None else f"{base}/v1/predictions?cursor={page.next_cursor}"
    return JSONResponse({"previous": None, "next": following, "results": results})


@router.get(
    "/v1/predictions/{prediction_id}",
    summary="A prediction (Replicate)",
    response_model=Prediction,
    responses=problem_responses(401, _NOT_FOUND),
)
async def get_prediction(
    prediction_id: str, request: Request, who: CallerDep, jobs: JobsDep, settings: SettingsDep
) -> Response:
    return JSONResponse(await _prediction(jobs, settings, request, await owned_job(jobs, prediction_id, who)))


@router.post(
    "/v1/predictions/{prediction_id}/cancel",
    summary="Cancel a prediction (Replicate)",
    response_model=Prediction,
    responses={
        202: {"model": Prediction, "description": "Still stopping; get it again for canceled."},
        **problem_responses(401, _NOT_FOUND, (409, "The prediction has already finished.")),
    },
)
async def cancel_prediction(
    prediction_id: str, request: Request, who: CallerDep, jobs: JobsDep, settings: SettingsDep
) -> Response:
    canceled = await cancel_job(request, prediction_id, who, jobs, settings)
    job = await owned_job(jobs, prediction_id, who)
    return JSONResponse(await _prediction(jobs, settings, request, job), status_code=canceled.status_code)


@router.get(
    "/v1/predictions/{prediction_id}/stream",
    summary="A prediction's Server-Sent Events (Replicate's urls.stream): logs, output, error, done",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "logs while it runs, output per image, done."},
        204: {"description": "Last-Event-ID says the client already has the stream's last event."},
        **problem_responses(401, _NOT_FOUND),
    },
)
async def stream_prediction(
    prediction_id: str, request: Request, who: CallerDep, jobs: JobsDep, bus: EventsDep, settings: SettingsDep
) -> Response:
    job = await owned_job(jobs, prediction_id, who)
    last_event_id = request.headers.get("last-event-id") or None
    base = base_url(request, settings)
    stream = await prediction_stream(jobs, bus, job, base, last_event_id, settings.sse_keepalive_seconds)
    if stream is None:
        return Response(status_code=204)  # tells EventSource clients to stop reconnecting
    return StreamingResponse(stream, media_type="text/event-stream", headers=sse.HEADERS)


# -- models and versions --------------------------------------------------------------------------

_NO_MODEL = (404, "The model is not served here (nor an alias of one).")


@router.get(
    "/v1/models/{owner}/{name}",
    summary="A model (Replicate), e.g. black-forest-labs/flux-2-dev, with its latest_version",
    response_model=ModelObject,
    responses=problem_responses(401, _NO_MODEL),
)
async def get_replicate_model(
    owner: str, name: str, request: Request, services: ServicesDep, who: CallerDep
) -> Response:
    body = model_object(owner, name, base_url(request, services.settings), services)
    return JSONResponse(body.model_dump(mode="json"))


@router.get(
    "/v1/models/{owner}/{name}/versions",
    summary="A model's versions (Replicate): the one served here",
    response_model=VersionPage,
    responses=problem_responses(401, _NO_MODEL),
)
async def list_versions(owner: str, name: str, services: ServicesDep, who: CallerDep) -> Response:
    return JSONResponse(version_page(owner, name, services).model_dump(mode="json"))


@router.get(
    "/v1/models/{owner}/{name}/versions/{version_id}",
    summary="One version of a model (Replicate)",
    response_model=VersionObject,
    responses=problem_responses(401, (404, "Not this model's version, or the model is not served here.")),
)
async def get_version(owner: str, name: str, version_id: str, services: ServicesDep, who: CallerDep) -> Response:
    model = served_version(owner, name, version_id, services)
    return JSONResponse(version_object(model, services).model_dump(mode="json"))


# -- files ---------------------------------------------------------------------------------------


def _file_object(upload: Upload, base: str) -> dict[str, Any]:
    body = FileObject(
        id=upload.id,
        name=upload.name,
        content_type=upload.content_type,
        size=upload.size,
        etag=upload.sha256[:32],
        checksums={"sha256": upload.sha256},
        metadata=upload.metadata,
        created_at=iso(upload.created_at) or "",
        expires_at=iso(upload.expires_at) or "",
        urls=FileUrls(get=f"{base}/v1/files/{upload.id}"),
    )
    return body.model_dump(mode="json")


def _metadata(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidRequest("metadata must be a JSON object", param="metadata") from None
    if not isinstance(value, dict):
        raise InvalidRequest("metadata must be a JSON object", param="metadata")
    return value


@router.post(
    "/v1/files",
    summary="Upload a file to use as a prediction's input (Replicate)",
    response_model=FileObject,
    status_code=201,
    responses=problem_responses(401, 400, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["content"],
                        "properties": {
                            "content": {"type": "string", "format": "binary"},
                            "metadata": {"type": "string", "description": "A JSON object kept with the file."},
                        },
                    }
                }
            },
        }
    },
)
async def create_file(request: Request, who: CallerDep, services: ServicesDep) -> Response:
    settings = services.settings
    async with request.form(max_files=1, max_fields=4) as form:
        unknown = sorted(set(form.keys()) - {"content", "metadata", "filename", "content_type"})
        if unknown:
            raise InvalidRequest(f"unknown field {unknown[0]!r}; send the file as content", param=unknown[0])
        content = form.get("content")
        if not isinstance(content, UploadFile):
            raise InvalidRequest("send the file as the multipart file field content", param="content")
        data = await content.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise PayloadTooLarge(f"content is larger than {settings.max_upload_mb:g} MB", param="content")
        metadata = form.get("metadata")
        name = content.filename or "file"
        media_type = content.content_type or "application/octet-stream"
    upload = await asyncio.to_thread(
        uploads(services).create,
        who.owner,
        name,
        media_type,
        data,
        _metadata(metadata if isinstance(metadata, str) else None),
    )
    return JSONResponse(_file_object(upload, base_url(request, settings)), status_code=201)


@router.get(
    "/v1/files/{file_id}",
    summary="An uploaded file's details (Replicate)",
    response_model=FileObject,
    responses=problem_responses(401, _NO_FILE),
)
async def get_file(file_id: str, request: Request, who: CallerDep, services: ServicesDep) -> Response:
    upload = await asyncio.to_thread(uploads(services).get, file_id, who.owner)
    return JSONResponse(_file_object(upload, base_url(request, services.settings)))


@router.get(
    "/v1/files/{file_id}/download",
    summary="An uploaded file's content (Replicate)",
    response_class=Response,
    responses=problem_responses(401, _NO_FILE),
)
async def download_file(file_id: str, who: CallerDep, services: ServicesDep) -> Response:
    upload, data = await asyncio.to_thread(uploads(services).read, file_id, who.owner)
    return Response(data, media_type=upload.content_type, headers={"x-content-type-options": "nosniff"})


@router.delete(
    "/v1/files/{file_id}",
    summary="Delete an uploaded file (Replicate)",
    status_code=204,
    response_model=None,
    responses=problem_responses(401, _NO_FILE),
)
async def delete_file(file_id: str, who: CallerDep, services: ServicesDep) -> Response:
    await asyncio.to_thread(uploads(services).delete, file_id, who.owner)
    return Response(status_code=204)
