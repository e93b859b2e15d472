"""/v1/admin/...: manage API keys and read every key's usage. Needs an admin key."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request

from fluxserve.accounts.keys import ApiKey, KeyLimits, Period, Scope
from fluxserve.accounts.keystore import parse_expiry
from fluxserve.accounts.usage import start_of_day
from fluxserve.api.auth import admin
from fluxserve.api.deps import KeysDep, NowDep, UsageDep
from fluxserve.api.openapi import error_responses
from fluxserve.api.parsing import reject_unknown_query
from fluxserve.api.protocol.keys import CreatedKey, KeyList, KeyView, NewKey
from fluxserve.api.protocol.usage import Days, UsageList, UsageRow, usage_json

router = APIRouter(tags=["admin"], dependencies=[Depends(admin)])

_ERRORS = error_responses(401, (403, "The key is not an admin key."))


def key_view(key: ApiKey, now: float) -> dict[str, Any]:
    return KeyView(**key.describe(now)).model_dump(mode="json")


@router.post(
    "/v1/admin/keys", summary="Create an API key", status_code=201, response_model=CreatedKey, responses=_ERRORS
)
async def create_key(body: NewKey, keys: KeysDep, now: NowDep) -> dict[str, Any]:
    limits = KeyLimits(
        rpm=body.rpm,
        concurrency=body.concurrency,
        quota_megapixels=body.quota_megapixels,
        quota_period=None if body.quota_period is None else Period(body.quota_period),
        loras=None if body.loras is None else tuple(body.loras),
    )
    expires_at = None if body.expires is None else parse_expiry(body.expires, now)
    key, secret = await asyncio.to_thread(keys.create, body.name, Scope(body.scope), limits, expires_at)
    return {**key_view(key, now), "key": secret}


@router.get(
    "/v1/admin/keys", summary="List API keys (never the keys themselves)", response_model=KeyList, responses=_ERRORS
)
async def list_keys(keys: KeysDep, now: NowDep) -> dict[str, Any]:
    every = await asyncio.to_thread(keys.all)
    return {"object": "list", "data": [key_view(key, now) for key in every]}


@router.get("/v1/admin/keys/{key_id}", summary="One API key", response_model=KeyView, responses=_ERRORS)
async def get_key(key_id: str, keys: KeysDep, now: NowDep) -> dict[str, Any]:
    key = await asyncio.to_thread(keys.get, key_id)
    return key_view(key, now)


@router.delete(
    "/v1/admin/keys/{key_id}",
    summary="Revoke an API key at once (it stays listed, with its usage)",
    response_model=KeyView,
    responses=_ERRORS,
)
async def revoke_key(key_id: str, keys: KeysDep, now: NowDep) -> dict[str, Any]:
    key = await asyncio.to_thread(keys.revoke, key_id)
    return key_view(key, now)


@router.get(
    "/v1/admin/usage",
    summary="Every key's usage per day and model",
    response_model=UsageList,
    response_model_exclude_unset=True,
    responses=_ERRORS,
)
async def all_usage(request: Request, reports: UsageDep, now: NowDep, days: Days = 30) -> dict[str, Any]:
    reject_unknown_query(request, {"days"})
    rows = await asyncio.to_thread(reports.daily, since=start_of_day(days - 1, now), every_key=True)
    return usage_json(UsageList(data=[UsageRow(**row.to_json()) for row in rows]))
