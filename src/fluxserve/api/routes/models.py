"""GET /v1/models and /v1/models/{id}: what this server serves, with each model's limits."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from starlette.requests import Request

from fluxserve.api.auth import caller
from fluxserve.api.protocol import ErrorBody, ModelCapabilities, ModelCard, ModelList
from fluxserve.api.serving import context
from fluxserve.engines.base import Capabilities
from fluxserve.engines.hosted.base import HostedEngine
from fluxserve.jobs.worker import ModelWorker, WorkerState

router = APIRouter(tags=["models"], dependencies=[Depends(caller)])


def capabilities_of(caps: Capabilities) -> ModelCapabilities:
    return ModelCapabilities(
        family=caps.family,
        min_side=caps.min_side,
        max_side=caps.max_side,
        max_megapixels=caps.max_megapixels,
        size_multiple=caps.size_multiple,
        max_aspect_ratio=caps.max_aspect_ratio,
        default_size=f"{caps.default_width}x{caps.default_height}",
        max_reference_images=caps.max_reference_images,
        default_steps=caps.default_steps,
        min_steps=caps.min_steps,
        max_steps=caps.max_steps,
        guidance=caps.guidance,
        default_guidance=caps.default_guidance if caps.guidance else None,
        min_guidance=caps.min_guidance if caps.guidance else None,
        max_guidance=caps.max_guidance if caps.guidance else None,
        max_images=caps.max_images,
        safety_tolerance=caps.safety_tolerance,
        max_prompt_chars=caps.max_prompt_chars,
    )


def card(worker: ModelWorker, created: int) -> ModelCard:
    engine = worker.engine
    if isinstance(engine, HostedEngine):  # its limits are the provider's, known without loading
        provider: Literal["local", "cloudflare", "bfl"] = "bfl" if engine.model.provider == "bfl" else "cloudflare"
        return ModelCard(
            id=worker.name,
            created=created,
            status=worker.state.value,
            provider=provider,
            configured=engine.configured(),
            capabilities=capabilities_of(engine.capabilities),
        )
    ready = worker.state is WorkerState.READY
    return ModelCard(
        id=worker.name,
        created=created,
        status=worker.state.value,
        capabilities=capabilities_of(engine.capabilities) if ready else None,
    )


@router.get("/v1/models", summary="List the models this server serves", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    ctx = context(request)
    return ModelList(data=[card(worker, ctx.started) for worker in ctx.service.workers.values()])


@router.get(
    "/v1/models/{model_id:path}",
    summary="One model, with its capabilities",
    response_model=ModelCard,
    responses={404: {"model": ErrorBody, "description": "Not served here."}},
)
async def get_model(model_id: str, request: Request) -> ModelCard:
    ctx = context(request)
    return card(ctx.service.worker(model_id), ctx.started)
