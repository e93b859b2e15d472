"""GET /v1/usage: the calling key's usage per day and model, and where its quota stands."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.requests import Request

from fluxserve.accounts.periods import iso, period_bounds
from fluxserve.accounts.usage import daily_usage, megapixels_since, start_of_day
from fluxserve.api.auth import CallerDep
from fluxserve.api.openapi import error_responses
from fluxserve.api.parsing import reject_unknown_query
from fluxserve.api.protocol import whole_number_query
from fluxserve.api.serving import context

router = APIRouter(tags=["usage"])

MAX_DAYS = 366
Days = Annotated[
    int,
    whole_number_query("days", 1, MAX_DAYS),
    Query(description="Today and the days before it (UTC).", json_schema_extra={"minimum": 1, "maximum": MAX_DAYS}),
]


class UsageRow(BaseModel):
    key_id: str | None = Field(description="null: work done without a key (an open server).")
    day: str = Field(description="YYYY-MM-DD, UTC.")
    model: str
    jobs: int
    images: int
    steps: int
    input_megapixels: float
    output_megapixels: float
    megapixels: float = Field(description="input + output: what quotas count.")
    cost_usd: float | None = Field(None, description="What hosted providers charged, where they said.")


class QuotaState(BaseModel):
    megapixels: float
    period: Literal["day", "month"]
    used_megapixels: float = Field(description="Billed, plus reserved by jobs still queued or running.")
    resets_at: str = Field(description="ISO 8601, UTC.")


class UsageList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageRow] = Field(description="Succeeded jobs only: failed and canceled ones are not billed.")
    quota: QuotaState | None = Field(default=None, description="Only for a key with a quota.")


@router.get(
    "/v1/usage",
    summary="This key's usage per day (UTC) and model, and its quota",
    response_model=UsageList,
    response_model_exclude_unset=True,
    responses=error_responses(400, 401),
)
async def usage(request: Request, who: CallerDep, days: Days = 30) -> dict[str, Any]:
    reject_unknown_query(request, {"days"})
    service = context(request).service
    store, now = service.db, service.admission.now()
    rows = await asyncio.to_thread(daily_usage, store, since=start_of_day(days - 1, now), key_id=who.owner)
    body = UsageList(data=[UsageRow(**row.to_json()) for row in rows])
    limits = None if who.key is None else who.key.limits
    if who.key is not None and limits is not None and limits.quota_megapixels and limits.quota_period:
        start, reset = period_bounds(limits.quota_period, now)
        used = await asyncio.to_thread(megapixels_since, store, who.key.id, start)
        body.quota = QuotaState(
            megapixels=limits.quota_megapixels,
            period=limits.quota_period.value,
            used_megapixels=round(used, 4),
            resets_at=iso(reset),
        )
    return usage_json(body)


def usage_json(body: UsageList) -> dict[str, Any]:
    """The body as sent: rows whole (``key_id`` null means no key), ``quota`` only where the key has one."""
    return body.model_dump(mode="json", exclude={"quota"} if body.quota is None else set())
