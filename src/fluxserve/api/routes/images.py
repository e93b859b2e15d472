"""POST /v1/images/generations and /v1/images/edits (OpenAI's Images API, plus FLUX fields)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from fluxserve.api.auth import CallerDep
from fluxserve.api.protocol import ErrorBody, ImagesResponse, images_request_body
from fluxserve.api.serving import serve_images
from fluxserve.jobs.models import Operation

router = APIRouter(tags=["images"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Invalid request: the message says what to send instead; param names the field."),
        (401, "No API key, or one that is wrong, revoked or expired."),
        (404, "Unknown model."),
        (409, "The job was canceled."),
        (413, "The body or an upload is too large."),
        (415, "The body is neither JSON nor multipart/form-data."),
        (429, "The model's queue is full, or the key's rate, concurrency or quota is used up; see Retry-After."),
        (500, "The generation failed (x-should-retry: false)."),
        (503, "The model is loading or failed to load; see Retry-After."),
    )
}
_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"model": ImagesResponse}, **_ERRORS}


@router.post(
    "/v1/images/generations",
    summary="Create images from a prompt and optional reference images",
    response_model=None,
    responses=_RESPONSES,
    openapi_extra={"requestBody": images_request_body(required_images=False)},
)
async def create_images(request: Request, who: CallerDep) -> Response:
    return await serve_images(request, Operation.GENERATION, who)


@router.post(
    "/v1/images/edits",
    summary="Edit or combine one or more images as a prompt describes",
    response_model=None,
    responses=_RESPONSES,
    openapi_extra={"requestBody": images_request_body(required_images=True)},
)
async def edit_images(request: Request, who: CallerDep) -> Response:
    return await serve_images(request, Operation.EDIT, who)
