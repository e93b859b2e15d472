"""Replicate's model versions: one stable id per served model, run through the official client."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import replicate
from fastapi import FastAPI
from fastapi.testclient import TestClient
from replicate.exceptions import ReplicateError

from tests.helpers import TEST_TIMEOUT
from tests.jobs_support import LiveServer

DEV = "black-forest-labs/flux-2-dev"
ALIASES = {"flux-2-dev": "tiny-random-base"}
SMALL = {"aspect_ratio": "custom", "width": 64, "height": 64, "steps": 2, "output_format": "png"}
UNKNOWN = "0" * 64


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(model_aliases=ALIASES)


@pytest.fixture
def client(server: LiveServer) -> Iterator[replicate.Client]:
    made = replicate.Client(api_token="r8_unused-on-loopback", base_url=server.url, timeout=TEST_TIMEOUT)
    yield made
    made._client.close()


def versions_of(app: FastAPI, *models: str) -> list[str]:
    with TestClient(app) as http:
        return [http.get(f"/v1/models/{model}/versions").json()["results"][0]["id"] for model in models]


def test_a_model_has_a_latest_version_and_the_same_one_listed(client: replicate.Client, server: LiveServer) -> None:
    model = client.models.get(DEV)
    assert (model.owner, model.name, model.url) == ("black-forest-labs", "flux-2-dev", f"{server.url}/v1/models/{DEV}")
    version = model.latest_version
    assert version is not None
    assert re.fullmatch(r"[0-9a-f]{64}", version.id)
    assert version.openapi_schema["components"]["schemas"]["Input"]["properties"]["prompt"]
    assert [listed.id for listed in model.versions.list().results] == [version.id]
    assert model.versions.get(version.id).id == version.id
    # the alias and the served model's own name are the same served weights: the same version
    assert client.models.get("anyone/tiny-random-base").latest_version.id == version.id  # type: ignore[union-attr]
    assert client.models.get("anyone/tiny-random").latest_version.id != version.id  # type: ignore[union-attr]


def test_run_owner_name_colon_version(client: replicate.Client, server: LiveServer) -> None:
    version = client.models.get(DEV).latest_version
    assert version is not None
    output = client.run(f"{DEV}:{version.id}", input={"prompt": "a versioned lighthouse", **SMALL})
    assert isinstance(output, str)
    assert output.startswith(server.url)
    [job] = server.service.history(None, limit=1).jobs
    assert job.spec.model == "tiny-random-base"


@pytest.mark.parametrize("prefixed", [False, True])
def test_create_with_a_version_id(client: replicate.Client, prefixed: bool) -> None:
    version_id = client.models.get(DEV).latest_version.id  # type: ignore[union-attr]
    version = f"{DEV}:{version_id}" if prefixed else version_id
    prediction = client.predictions.create(version=version, input={"prompt": "by version", **SMALL})
    prediction.wait()
    assert prediction.status == "succeeded"


def test_an_unknown_version_is_a_404_problem(client: replicate.Client, server: LiveServer) -> None:
    for run in (
        lambda: client.run(f"{DEV}:{UNKNOWN}", input={"prompt": "x", **SMALL}),
        lambda: client.predictions.create(version=UNKNOWN, input={"prompt": "x", **SMALL}),
        lambda: client.models.get(DEV).versions.get(UNKNOWN),
    ):
        with pytest.raises(ReplicateError) as refused:
            run()
        assert (refused.value.status, refused.value.title) == (404, "model_not_found")
        assert UNKNOWN in (refused.value.detail or "")
    response = server.http.post("/v1/predictions", json={"version": f"{DEV}:{UNKNOWN}", "input": {"prompt": "x"}})
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["param"] == "version"
    missing = server.http.get("/v1/models/someone/not-served")
    assert (missing.status_code, missing.json()["title"]) == (404, "model_not_found")
    assert server.http.get("/v1/models/tiny-random").json()["id"] == "tiny-random"  # fluxserve's card is still there


def test_the_version_is_stable_across_restarts_and_follows_the_configuration(
    make_app: Callable[..., FastAPI],
) -> None:
    settings: dict[str, Any] = {"models": ["tiny-random", "tiny-random-base"], "model_aliases": ALIASES}
    first = versions_of(make_app(**settings), DEV, "x/tiny-random")
    assert versions_of(make_app(**settings), DEV, "x/tiny-random") == first  # a restart, the same configuration
    assert versions_of(make_app(**settings, compile=True, offload="model"), DEV, "x/tiny-random") == first
    assert versions_of(make_app(**settings, dtype="bfloat16"), DEV, "x/tiny-random") != first
    per_model = {"runtime": {"tiny-random": {"quantize_transformer": "torchao-int8"}}}
    changed = versions_of(make_app(**settings, **per_model), DEV, "x/tiny-random")
    assert changed[0] == first[0]
    assert changed[1] != first[1]
