"""Provider model names (flux-2-dev, flux-2-pro...) mapped to served models: defaults, settings, /v1/models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from fluxserve.api.app import create_app
from fluxserve.engines.aliases import PROVIDER_MODELS, alias_table, default_aliases, resolve
from fluxserve.errors import InvalidRequest
from fluxserve.settings import Settings, load_settings


def test_the_same_weights_win_locally_then_hosted() -> None:
    aliases = default_aliases(["flux.2-klein-4b", "cf:flux-2-dev", "bfl:flux-2-pro"])
    assert aliases["flux-2-klein-4b"] == "flux.2-klein-4b"
    assert aliases["flux-2-dev"] == "cf:flux-2-dev"
    assert aliases["flux-2-pro"] == "bfl:flux-2-pro"
    assert aliases["flux-2-max"] == "bfl:flux-2-pro"  # no [max] served: [pro] is the same line
    assert aliases["flux-2-flex"] == "cf:flux-2-dev"


def test_names_fall_back_to_a_model_of_the_same_generation_only() -> None:
    aliases = default_aliases(["tiny-random", "tiny-random-flux1"])
    assert {name: aliases[name] for name in PROVIDER_MODELS if name.startswith("flux-2")} == {
        name: "tiny-random" for name in PROVIDER_MODELS if name.startswith("flux-2")
    }
    assert aliases["flux-schnell"] == aliases["flux-dev"] == "tiny-random-flux1"
    only_flux2 = default_aliases(["flux.2-klein-4b"])
    assert "flux-schnell" not in only_flux2
    assert "flux-1-dev" not in only_flux2


def test_a_repository_id_gets_no_guessed_alias() -> None:
    assert default_aliases(["someone/my-flux"]) == {}


def test_configured_aliases_override_the_defaults_and_names_resolve() -> None:
    served = ["tiny-random", "tiny-random-base"]
    table = alias_table(served, {"flux-2-dev": "tiny-random-base", "house-style": "tiny-random"})
    assert table["flux-2-dev"] == "tiny-random-base"
    assert table["flux-2-pro"] == "tiny-random"
    assert resolve("house-style", table, served) == "tiny-random"
    assert resolve("tiny-random-base", table, served) == "tiny-random-base"
    assert resolve("flux-9", table, served) is None


def test_an_alias_to_a_model_not_served_is_a_setting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXSERVE_MODELS", "tiny-random")
    monkeypatch.setenv("FLUXSERVE_MODEL_ALIASES", '{"flux-2-dev": "tiny-random-base"}')
    with pytest.raises(InvalidRequest) as raised:
        load_settings()
    assert "model_aliases.flux-2-dev" in str(raised.value)
    assert "not served" in str(raised.value)


def test_aliases_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXSERVE_MODELS", "tiny-random,tiny-random-base")
    monkeypatch.setenv("FLUXSERVE_MODEL_ALIASES", '{"flux-2-dev": "tiny-random-base"}')
    assert load_settings().model_aliases == {"flux-2-dev": "tiny-random-base"}
    monkeypatch.setenv("FLUXSERVE_MODEL_ALIASES", "{flux")
    with pytest.raises(InvalidRequest, match="not JSON"):
        load_settings()


def test_models_list_each_models_aliases(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        models=["tiny-random", "tiny-random-flux1"], model_aliases={"flux-2-dev": "tiny-random-flux1"}
    )
    with TestClient(create_app(settings)) as client:
        cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
        one = client.get("/v1/models/tiny-random-flux1").json()
    assert "flux-2-klein-4b" in cards["tiny-random"]["aliases"]
    assert "flux-2-dev" not in cards["tiny-random"]["aliases"]
    assert one["aliases"] == sorted(["flux-2-dev", "flux-1-dev", "flux-dev", "flux-1-schnell", "flux-schnell"])
