"""GET /v1/models and /v1/models/{id}: what this server serves, with each model's limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, Depends

from fluxserve.api.auth import caller
from fluxserve.api.deps import AliasesDep, JobsDep, StartedDep
from fluxserve.api.openapi import error_responses
from fluxserve.api.protocol.models import ModelCapabilities, ModelCard, ModelList, ModelRuntimeInfo
from fluxserve.engines.base import Capabilities
from fluxserve.jobs.status import ModelStatus

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
        masks=caps.masks,
        lora_family=caps.lora_family,
    )


_PROVIDERS: dict[str, Literal["local", "cloudflare", "bfl"]] = {
    "local": "local",
    "cloudflare": "cloudflare",
    "bfl": "bfl",
}


def card(status: ModelStatus, created: int, aliases: Mapping[str, str]) -> ModelCard:
    caps = status.capabilities
    return ModelCard(
        id=status.name,
        created=created,
        status=status.state,
        provider=_PROVIDERS[status.provider],
        configured=status.configured if status.remote else None,
        capabilities=None if caps is None else capabilities_of(caps),
        runtime=None if status.runtime is None else ModelRuntimeInfo(**asdict(status.runtime)),
        aliases=sorted(alias for alias, model in aliases.items() if model == status.name),
    )


@router.get(
    "/v1/models",
    summary="List the models this server serves",
    response_model=ModelList,
    responses=error_responses(401),
)
async def list_models(jobs: JobsDep, started: StartedDep, aliases: AliasesDep) -> ModelList:
    return ModelList(data=[card(status, started, aliases) for status in jobs.model_statuses()])


@router.get(
    "/v1/models/{model_id:path}",
    summary="One model, with its capabilities",
    response_model=ModelCard,
    responses=error_responses(401, (404, "Not served here.")),
)
async def get_model(model_id: str, jobs: JobsDep, started: StartedDep, aliases: AliasesDep) -> ModelCard:
    return card(jobs.model_status(model_id), started, aliases)
