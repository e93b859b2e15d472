"""Shared fixtures: tiny random-weight pipelines, built once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions

TINY = ("tiny-random", "tiny-random-base", "tiny-random-dev", "tiny-random-flux1", "tiny-random-schnell")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fluxserve-cache")


@pytest.fixture(scope="session")
def options(cache_dir: Path) -> EngineOptions:
    return EngineOptions(cache_dir=cache_dir, allow_download=False)


@pytest.fixture(scope="session")
def engines(options: EngineOptions) -> Iterator[dict[str, DiffusersEngine]]:
    loaded = {}
    for name in TINY:
        engine = DiffusersEngine(name, options)
        engine.load()
        loaded[name] = engine
    return loaded


@pytest.fixture
def klein(engines: dict[str, DiffusersEngine]) -> DiffusersEngine:
    return engines["tiny-random"]
