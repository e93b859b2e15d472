"""Shared fixtures: tiny random-weight pipelines and a Postgres cluster, each made once per test session.

Tests run on SQLite unless parametrised over both databases: ``pytestmark = BOTH_DATABASES`` (from
tests.postgres_support) gives every server of a module's tests its own fresh Postgres database too;
the ``database`` fixture is the store itself, opened as the server opens it, on each database.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fluxserve.api.app import create_app
from fluxserve.db import Database, open_database
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.settings import Settings
from tests.helpers import MAX_WAIT
from tests.jobs_support import LiveServer
from tests.postgres_support import DATABASES, Cluster, running_cluster
from tests.safety_support import build_classifier
from tests.servers import serve_in_thread

TINY = ("tiny-random", "tiny-random-base", "tiny-random-dev", "tiny-random-flux1", "tiny-random-schnell")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fluxserve-cache")


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A lora_dir of tiny adapters (see tests/lora_files.py), built once per session."""
    from tests.lora_files import build_lora_dir

    return build_lora_dir(tmp_path_factory.mktemp("loras"), cache_dir)


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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One Postgres server for the session (a failure, not a skip, where Postgres is not installed)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (the SQLite file in the data dir) unless parametrised with ``postgres``: then the URL of
    a fresh database of the session's cluster."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database()


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The store on each database in turn, opened as the server opens it, migrated and empty."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_cluster").create_database()
    opened = open_database(Settings(data_dir=tmp_path / "data", database_url=url))
    yield opened
    opened.close()


@pytest.fixture
def make_settings(tmp_path: Path, cache_dir: Path, database_url: str | None) -> Callable[..., Settings]:
    """Settings for a test server: its own data folder and database, the session's tiny models, no warm-up."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "cache_dir": cache_dir,
            "models": ["tiny-random"],
            "warmup": False,
            "allow_download": False,
            "max_wait_seconds": MAX_WAIT,
        }
        return Settings(**{**values, **overrides})

    return build


@pytest.fixture
def make_app(make_settings: Callable[..., Settings], engines: dict[str, DiffusersEngine]) -> Callable[..., FastAPI]:
    """An app serving already-loaded tiny engines (``models=[...]`` picks which; ``clock``: see create_app)."""

    def build(*, clock: Callable[[], float] = time.time, **overrides: Any) -> FastAPI:
        settings = make_settings(**overrides)
        return create_app(settings, {name: engines[name] for name in settings.models}, clock=clock)

    return build


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    """The app in-process, serving tiny-random, tiny-random-base and tiny-random-flux1."""
    with TestClient(make_app(models=["tiny-random", "tiny-random-base", "tiny-random-flux1"])) as test_client:
        yield test_client


@pytest.fixture
def make_server(make_app: Callable[..., FastAPI]) -> Iterator[Callable[..., LiveServer]]:
    """Real servers on loopback (serving tiny-random-base and tiny-random unless told otherwise).

    ``serving``: the LiveServer subclass to wrap the server in; other arguments go to make_app.
    """
    with contextlib.ExitStack() as stack:

        def start(*, serving: type[LiveServer] = LiveServer, **overrides: Any) -> LiveServer:
            app = make_app(**{"models": ["tiny-random-base", "tiny-random"], **overrides})
            url = stack.enter_context(serve_in_thread(app))
            return stack.enter_context(serving(app, url))

        yield start


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one test module (Playwright's sync API owns an event loop while open)."""
    from playwright.sync_api import sync_playwright

    from tests.browser_support import launch

    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def open_studio(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open the studio on a server (``open_studio(server, width=..., height=...)``) in a fresh browser
    profile, ready for input; every page opened is closed after the test."""
    from playwright.sync_api import expect

    from tests.browser_support import StudioPage, studio_page
    from tests.helpers import TEST_TIMEOUT

    with contextlib.ExitStack() as stack:

        def open_(server: LiveServer, **size: int) -> StudioPage:
            studio = stack.enter_context(studio_page(browser, server.url, **size))
            studio.page.set_default_timeout(TEST_TIMEOUT * 1000)
            expect(studio.page.locator("body")).to_have_attribute("data-ready", "true")
            return studio

        yield open_


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    """A real S3-compatible server (moto's) on loopback, shared by the session: each test makes its own
    bucket. A test that takes a server down starts its own (see tests/object_store.py)."""
    from tests.object_store import MotoS3

    server = MotoS3()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["folder", "s3"])
def storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings that keep images in the data directory, then (a second run) in a fresh bucket."""
    if request.param == "folder":
        return {}
    server = request.getfixturevalue("s3")
    return server.settings(server.new_bucket(), prefix="images")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The content filter's tiny classifier (tests/safety_support.py), built once a session."""
    return build_classifier(tmp_path_factory.mktemp("nsfw-classifier"))
