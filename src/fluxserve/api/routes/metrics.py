"""GET /metrics: the Prometheus text format. Open to anyone who can reach the server, unless
``metrics_require_key`` asks for an admin key; not registered at all with ``metrics = false``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from fluxserve.api.auth import admin
from fluxserve.api.deps import services
from fluxserve.telemetry.metrics import CONTENT_TYPE


async def scrape(request: Request) -> Response:
    metrics = services(request).telemetry.metrics
    body = await asyncio.to_thread(metrics.render)  # queue depths are read from the store
    return Response(body, media_type=CONTENT_TYPE)


def router(require_key: bool) -> APIRouter:
    """The route, behind an admin key when ``require_key``."""
    found = APIRouter(tags=["metrics"])
    found.add_api_route(
        "/metrics",
        scrape,
        methods=["GET"],
        summary="Prometheus metrics",
        include_in_schema=False,
        dependencies=[Depends(admin)] if require_key else [],
    )
    return found
