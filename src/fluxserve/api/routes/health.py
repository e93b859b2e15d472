"""GET /health (liveness) and GET /ready (models loaded and warm): public, so they say nothing more.

No version, no model names, no reasons: those are in /v1/models (with a key) and in the server log.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from fluxserve.api.deps import JobsDep
from fluxserve.api.openapi import error_responses
from fluxserve.api.protocol.health import Health, Readiness
from fluxserve.errors import EngineNotReady, ModelUnavailable
from fluxserve.jobs.status import WorkerState

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers", response_model=Health)
async def health() -> Health:
    return Health()


@router.get(
    "/ready",
    summary="Readiness: every model is loaded and warmed up",
    response_model=Readiness,
    responses=error_responses((503, "A model is loading (Retry-After) or failed to load.")),
)
async def ready(jobs: JobsDep) -> Response:
    states = [status.state for status in jobs.model_statuses()]
    if WorkerState.FAILED in states:
        raise ModelUnavailable("a model failed to load; see the server log")
    if WorkerState.LOADING in states:
        raise EngineNotReady("a model is still loading", retry_after=5)
    return JSONResponse(Readiness().model_dump())
