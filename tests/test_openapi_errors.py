"""The OpenAPI document describes every error response with the one error shape (api/openapi.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from fluxserve.api.openapi import USUAL, error_responses
from fluxserve.api.protocol.replicate import is_replicate_path

PUBLIC = {"/health", "/ready", "/v1/images/files/{job_id}/{name}"}
SURFACE_ERRORS = {"/v1/{model}": "BflError", "/v1/get_result": "BflError"}
"""Routes of another provider's API, whose errors come in that provider's shape."""
"""Routes that need no key: the rest list 401."""


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if path.startswith(("/v1/", "/health", "/ready"))
    ]


def test_every_error_response_has_the_error_shape(make_app: Callable[..., FastAPI]) -> None:
    document = make_app().openapi()
    checked = 0
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or int(status) == 422:
                continue
            schema = response["content"]["application/json"]["schema"]
            expected = "Problem" if is_replicate_path(path) else SURFACE_ERRORS.get(path, "ErrorBody")
            assert schema == {"$ref": f"#/components/schemas/{expected}"}, (path, method, status)
            assert response["description"], (path, method, status)
            checked += 1
    assert checked > 30


def test_every_keyed_route_lists_401(make_app: Callable[..., FastAPI]) -> None:
    for path, method, operation in operations(make_app().openapi()):
        if path not in PUBLIC:
            assert "401" in operation["responses"], (path, method)


def test_a_status_alone_takes_its_usual_wording_and_a_pair_its_own() -> None:
    responses = error_responses(401, (404, "No such job."))
    assert responses[401]["description"] == USUAL[401]
    assert responses[404]["description"] == "No such job."
