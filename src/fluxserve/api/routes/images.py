"""POST /v1/images/generations and /v1/images/edits (OpenAI's Images API, plus FLUX fields)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from fluxserve.api.auth import CallerDep
from fluxserve.api.deps import ServicesDep
from fluxserve.api.openapi import error_responses
from fluxserve.api.protocol.images import ImagesResponse, images_request_body
from fluxserve.api.serving import serve_images
from fluxserve.jobs.models import Operation

router = APIRouter(tags=["images"])

_ERRORS = error_responses(400, 401, (404, "Unknown model."), (409, "The job was canceled."), 413, 415, 429, 500, 503)
_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"model": ImagesResponse}, **_ERRORS}


@router.post(
    "/v1/images/generations",
    summary="Create images from a prompt and optional reference images",
    response_model=None,
    responses=_RESPONSES,
    openapi_extra={"requestBody": images_request_body(required_images=False)},
)
async def create_images(request: Request, who: CallerDep, services: ServicesDep) -> Response:
    return await serve_images(request, Operation.GENERATION, who, services)


@router.post(
    "/v1/images/edits",
    summary="Edit or combine one or more images as a prompt describes",
    response_model=None,
    responses=_RESPONSES,
    openapi_extra={"requestBody": images_request_body(required_images=True)},
)
async def edit_images(request: Request, who: CallerDep, services: ServicesDep) -> Response:
    return await serve_images(request, Operation.EDIT, who, services)
