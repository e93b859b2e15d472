"""GET /v1/loras: the adapters in the server's lora_dir (repo ids are not listed: any cached one works),
less those the calling key may not use."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from fluxserve.api.auth import CallerDep
from fluxserve.api.deps import LorasDep
from fluxserve.api.openapi import error_responses
from fluxserve.api.protocol.loras import LoraCard, LoraList
from fluxserve.defaults import LORA_SCALE_RANGE

router = APIRouter(tags=["loras"])


@router.get(
    "/v1/loras",
    summary="List the LoRA adapters requests may name, with each one's model family",
    response_model=LoraList,
    responses=error_responses(401),
)
async def list_loras(loras: LorasDep, who: CallerDep) -> LoraList:
    # Reads each file's header (cached by identity); a key limited to some adapters sees only those.
    found = await asyncio.to_thread(loras.available, who.allowed_loras)
    low, high = LORA_SCALE_RANGE
    return LoraList(
        data=[LoraCard(id=item.name, family=item.family, bytes=item.size) for item in found],
        max_per_request=loras.options.max_per_request,
        min_scale=low,
        max_scale=high,
    )
