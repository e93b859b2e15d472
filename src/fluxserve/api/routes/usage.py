"""GET /v1/usage: the calling key's usage per day and model, and where its quota stands."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from fluxserve.accounts.periods import iso, period_bounds
from fluxserve.accounts.usage import start_of_day
from fluxserve.api.auth import CallerDep
from fluxserve.api.deps import NowDep, UsageDep
from fluxserve.api.openapi import error_responses
from fluxserve.api.parsing import reject_unknown_query
from fluxserve.api.protocol.usage import Days, QuotaState, UsageList, UsageRow, usage_json

router = APIRouter(tags=["usage"])


@router.get(
    "/v1/usage",
    summary="This key's usage per day (UTC) and model, and its quota",
    response_model=UsageList,
    response_model_exclude_unset=True,
    responses=error_responses(400, 401),
)
async def usage(request: Request, who: CallerDep, reports: UsageDep, now: NowDep, days: Days = 30) -> dict[str, Any]:
    reject_unknown_query(request, {"days"})
    rows = await asyncio.to_thread(reports.daily, since=start_of_day(days - 1, now), key_id=who.owner)
    body = UsageList(data=[UsageRow(**row.to_json()) for row in rows])
    limits = None if who.key is None else who.key.limits
    if who.key is not None and limits is not None and limits.quota_megapixels and limits.quota_period:
        start, reset = period_bounds(limits.quota_period, now)
        used = await asyncio.to_thread(reports.megapixels_since, who.key.id, start)
        body.quota = QuotaState(
            megapixels=limits.quota_megapixels,
            period=limits.quota_period.value,
            used_megapixels=round(used, 4),
            resets_at=iso(reset),
        )
    return usage_json(body)
