"""GET /v1/models reports each model's own runtime, as loaded: two tiny models, two dtypes, one server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from fluxserve.api.app import create_app
from fluxserve.settings import Settings
from tests.helpers import wait_for


def _cards(client: TestClient) -> dict[str, Any]:
    response = client.get("/v1/models")
    assert response.status_code == 200
    return {card["id"]: card for card in response.json()["data"]}


def test_two_models_with_their_own_runtimes_each_report_their_own(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        models=["tiny-random", "tiny-random-base", "cf:flux-2-klein-4b"],
        device="cpu",
        dtype="float32",
        prompt_cache_mb=32,
        runtime={"tiny-random-base": {"dtype": "bfloat16", "prompt_cache_mb": 0}},
    )
    with TestClient(create_app(settings)) as client:  # engines made from the settings, per model
        wait_for(
            lambda: all(_cards(client)[m]["status"] == "ready" for m in ("tiny-random", "tiny-random-base")),
            "both tiny models loaded",
        )
        cards = _cards(client)
        one = client.get("/v1/models/tiny-random-base").json()

    full, half = cards["tiny-random"]["runtime"], cards["tiny-random-base"]["runtime"]
    assert full == {
        "device": "cpu",
        "dtype": "float32",
        "offload": "none",
        "quantize_transformer": "none",
        "quantize_text_encoder": "none",
        "step_cache": "none",
        "compile": False,
        "attention": "native",
        "prompt_cache_mb": 32.0,
        "memory_bytes": full["memory_bytes"],
    }
    assert half == {**full, "dtype": "bfloat16", "prompt_cache_mb": 0.0, "memory_bytes": half["memory_bytes"]}
    assert one["runtime"] == half
    # Measured from the loaded weights: the two models have the same parameters, bfloat16 half the bytes.
    assert full["memory_bytes"] > 0
    assert 0.45 < half["memory_bytes"] / full["memory_bytes"] < 0.55
    assert cards["cf:flux-2-klein-4b"]["runtime"] is None  # hosted: the provider runs it
