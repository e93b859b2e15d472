"""GET /health (liveness: public, says nothing secret) and GET /ready (models loaded and warm)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fluxserve import __version__
from fluxserve.api.protocol import ErrorBody
from fluxserve.api.serving import context
from fluxserve.errors import EngineNotReady, ModelUnavailable
from fluxserve.jobs.worker import WorkerState

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    models: dict[str, Literal["ready"]]


@router.get("/health", summary="Liveness: the process answers", response_model=Health)
async def health() -> Health:
    return Health(version=__version__)


@router.get(
    "/ready",
    summary="Readiness: every model is loaded and warmed up",
    response_model=Readiness,
    responses={503: {"model": ErrorBody, "description": "A model is loading (Retry-After) or failed to load."}},
)
async def ready(request: Request) -> Response:
    workers = context(request).service.workers.values()
    failed = [w.name for w in workers if w.state is WorkerState.FAILED]
    if failed:
        raise ModelUnavailable(f"model {', '.join(failed)} failed to load; see the server log")
    loading = [w.name for w in workers if w.state is WorkerState.LOADING]
    if loading:
        raise EngineNotReady(f"model {', '.join(loading)} is still loading", retry_after=5)
    return JSONResponse(Readiness(models={w.name: "ready" for w in workers}).model_dump())
