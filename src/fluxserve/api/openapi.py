"""The error responses the OpenAPI document lists, in one place: every one has the API's error shape.

Routers name the statuses a route can answer; a status alone takes its usual wording, a
``(status, description)`` pair says what it means on that route.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fluxserve.api.protocol.errors import ErrorBody
from fluxserve.api.protocol.replicate import Problem

USUAL: dict[int, str] = {
    400: "Invalid request: the message says what to send instead; param names the field.",
    401: "No API key, or one that is wrong, revoked or expired.",
    403: "The key may not do this.",
    404: "Not found, or not the caller's.",
    409: "The request contradicts the job's state or an earlier request.",
    413: "The body or an upload is too large.",
    415: "The body is neither JSON nor multipart/form-data.",
    429: "The model's queue is full, or the key's rate, concurrency or quota is used up; see Retry-After.",
    500: "The generation failed (x-should-retry: false).",
    503: "The model is loading or failed to load; see Retry-After.",
}


def error_responses(
    *statuses: int | tuple[int, str], body: type[BaseModel] = ErrorBody
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the error body's schema and its description
    (``body``: another surface's error shape, such as BFL's or Cloudflare's)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for entry in statuses:
        status, description = entry if isinstance(entry, tuple) else (entry, USUAL[entry])
        responses[status] = {"model": body, "description": description}
    return responses


def problem_responses(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """:func:`error_responses` for the Replicate surface, whose errors are problem details."""
    return {status: {**response, "model": Problem} for status, response in error_responses(*statuses).items()}
