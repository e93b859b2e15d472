"""GET /v1/usage and GET /v1/admin/usage: usage per key, day and model, and a key's quota."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, Field

from fluxserve.api.protocol.query import whole_number_query

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


def usage_json(body: UsageList) -> dict[str, Any]:
    """The body as sent: rows whole (``key_id`` null means no key), ``quota`` only where the key has one."""
    return body.model_dump(mode="json", exclude={"quota"} if body.quota is None else set())
