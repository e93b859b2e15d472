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
from tests.jobs_support import SLOW, LiveServer

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
    assert (job.spec.model, job.spec.version) == ("tiny-random-base", version.id)
    assert client.predictions.get(job.id).version == version.id


@pytest.mark.parametrize("prefixed", [False, True])
def test_a_prediction_shows_the_version_it_pinned(client: replicate.Client, prefixed: bool) -> None:
    version_id = client.models.get(DEV).latest_version.id  # type: ignore[union-attr]
    version = f"{DEV}:{version_id}" if prefixed else version_id
    prediction = client.predictions.create(version=version, input={"prompt": "by version", **SMALL})
    assert prediction.version == version_id
    prediction.wait()
    assert (prediction.status, prediction.version) == ("succeeded", version_id)
    assert client.predictions.get(prediction.id).version == version_id
    listed = {listed.id: listed.version for listed in client.predictions.list().results}
    assert listed[prediction.id] == version_id


def test_a_canceled_prediction_shows_its_version(client: replicate.Client, server: LiveServer) -> None:
    version_id = client.models.get(DEV).latest_version.id  # type: ignore[union-attr]
    blocker = server.submit(SLOW)
    queued = client.predictions.create(version=version_id, input={"prompt": "never", **SMALL})
    queued.cancel()
    assert (queued.status, queued.version) == ("canceled", version_id)
    server.http.post(blocker["urls"]["cancel"])


def test_a_prediction_that_named_the_model_shows_hidden(client: replicate.Client, server: LiveServer) -> None:
    """As Replicate answers a prediction of an official model made through its models endpoint."""
    by_path = client.models.predictions.create(model=DEV, input={"prompt": "by name", **SMALL})
    by_name = server.http.post("/v1/predictions", json={"version": DEV, "input": {"prompt": "by name", **SMALL}})
    by_model = server.http.post("/v1/predictions", json={"model": DEV, "input": {"prompt": "by name", **SMALL}})
    assert by_path.version == by_name.json()["version"] == by_model.json()["version"] == "hidden"
    # a job made before versions were recorded (or through another API) has none: it reads as hidden too
    job = server.submit({"model": "tiny-random-base", "prompt": "jobs api", "size": "64x64", "steps": 2})
    assert client.predictions.get(job["id"]).version == "hidden"


def test_an_unknown_version_is_a_422_as_on_replicate(client: replicate.Client, server: LiveServer) -> None:
    for run in (
        lambda: client.run(f"{DEV}:{UNKNOWN}", input={"prompt": "x", **SMALL}),
        lambda: client.predictions.create(version=UNKNOWN, input={"prompt": "x", **SMALL}),
        lambda: client.predictions.create(version="someone/not-served", input={"prompt": "x", **SMALL}),
    ):
        with pytest.raises(ReplicateError) as refused:
            run()
        assert (refused.value.status, refused.value.title) == (422, "Invalid version or not permitted")
        assert "not served here" in (refused.value.detail or "")
    response = server.http.post("/v1/predictions", json={"version": f"{DEV}:{UNKNOWN}", "input": {"prompt": "x"}})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["param"] == "version"
    assert UNKNOWN in response.json()["detail"]
    assert server.service.history(None, limit=1).jobs == []  # nothing was queued


def test_an_unknown_model_or_version_resource_is_a_404(client: replicate.Client, server: LiveServer) -> None:
    with pytest.raises(ReplicateError) as refused:
        client.models.get(DEV).versions.get(UNKNOWN)
    assert (refused.value.status, refused.value.title) == (404, "model_not_found")
    assert UNKNOWN in (refused.value.detail or "")
    with pytest.raises(ReplicateError) as unknown:
        client.models.predictions.create(model="someone/not-served", input={"prompt": "x", **SMALL})
    assert (unknown.value.status, unknown.value.title) == (404, "model_not_found")
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
