"""/v1/admin/...: manage API keys and read every key's usage. Needs an admin key."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from fluxserve.accounts.keys import MAX_QUOTA_MEGAPIXELS, MAX_RATE, ApiKey, KeyLimits, Period, Scope
from fluxserve.accounts.keystore import parse_expiry
from fluxserve.accounts.usage import daily_usage, start_of_day
from fluxserve.api.auth import admin
from fluxserve.api.openapi import error_responses
from fluxserve.api.parsing import reject_unknown_query
from fluxserve.api.routes.usage import Days, UsageList, UsageRow, usage_json
from fluxserve.api.serving import context

router = APIRouter(tags=["admin"], dependencies=[Depends(admin)])

_ERRORS = error_responses(401, (403, "The key is not an admin key."))


class KeyView(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str = Field(description="The key's first 12 characters, to recognise it; the rest is never shown again.")
    scope: Literal["generate", "admin"]
    status: Literal["active", "revoked", "expired"]
    rpm: int | None = Field(description="Requests that make a job, per rolling minute (null: no limit).")
    concurrency: int | None = Field(description="Jobs queued or running at once (null: no limit).")
    quota_megapixels: float | None = Field(description="Input plus output megapixels per quota_period.")
    quota_period: Literal["day", "month"] | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class CreatedKey(KeyView):
    key: str = Field(description="The key itself. Shown this once: only its hash is kept.")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyView]


class NewKey(BaseModel):
    """Strict: JSON numbers only ("5", 5.0 or "inf" are refused), finite, within the limits."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    scope: Literal["generate", "admin"] = "generate"
    rpm: int | None = Field(None, ge=1, le=MAX_RATE)
    concurrency: int | None = Field(None, ge=1, le=MAX_RATE)
    quota_megapixels: float | None = Field(None, gt=0, le=MAX_QUOTA_MEGAPIXELS, allow_inf_nan=False)
    quota_period: Literal["day", "month"] | None = None
    expires: str | None = Field(None, description="A date (2027-01-31, midnight UTC), an ISO date-time, or 30d / 12h.")


def _now(request: Request) -> float:
    """The server's clock, the one that expires keys and counts quotas."""
    return context(request).service.admission.now()


def key_view(key: ApiKey, now: float) -> dict[str, Any]:
    return KeyView(**key.describe(now)).model_dump(mode="json")


@router.post(
    "/v1/admin/keys", summary="Create an API key", status_code=201, response_model=CreatedKey, responses=_ERRORS
)
async def create_key(body: NewKey, request: Request) -> dict[str, Any]:
    keys = context(request).service.keys
    limits = KeyLimits(
        rpm=body.rpm,
        concurrency=body.concurrency,
        quota_megapixels=body.quota_megapixels,
        quota_period=None if body.quota_period is None else Period(body.quota_period),
    )
    expires_at = None if body.expires is None else parse_expiry(body.expires, _now(request))
    key, secret = await asyncio.to_thread(keys.create, body.name, Scope(body.scope), limits, expires_at)
    return {**key_view(key, _now(request)), "key": secret}


@router.get(
    "/v1/admin/keys", summary="List API keys (never the keys themselves)", response_model=KeyList, responses=_ERRORS
)
async def list_keys(request: Request) -> dict[str, Any]:
    keys = await asyncio.to_thread(context(request).service.keys.all)
    now = _now(request)
    return {"object": "list", "data": [key_view(key, now) for key in keys]}


@router.get("/v1/admin/keys/{key_id}", summary="One API key", response_model=KeyView, responses=_ERRORS)
async def get_key(key_id: str, request: Request) -> dict[str, Any]:
    key = await asyncio.to_thread(context(request).service.keys.get, key_id)
    return key_view(key, _now(request))


@router.delete(
    "/v1/admin/keys/{key_id}",
    summary="Revoke an API key at once (it stays listed, with its usage)",
    response_model=KeyView,
    responses=_ERRORS,
)
async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
    key = await asyncio.to_thread(context(request).service.keys.revoke, key_id)
    return key_view(key, _now(request))


@router.get(
    "/v1/admin/usage",
    summary="Every key's usage per day and model",
    response_model=UsageList,
    response_model_exclude_unset=True,
    responses=_ERRORS,
)
async def all_usage(request: Request, days: Days = 30) -> dict[str, Any]:
    reject_unknown_query(request, {"days"})
    store = context(request).service.db
    rows = await asyncio.to_thread(daily_usage, store, since=start_of_day(days - 1, _now(request)), every_key=True)
    return usage_json(UsageList(data=[UsageRow(**row.to_json()) for row in rows]))
