"""The engine seam: every engine says who does its work and can be closed, so callers never check types;
the job service reports each model's status without the API touching its worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fluxserve.api.app import build_services
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.registry import create_engine
from fluxserve.jobs.status import WorkerState
from fluxserve.settings import Settings
from tests.helpers import wait_for

SEAM = ("capabilities", "concurrency", "provider", "remote", "configured", "load", "generate", "close")
"""The members of the Engine protocol (an unloaded local engine's capabilities raise, so no isinstance)."""


@pytest.mark.parametrize(
    ("model", "provider", "remote", "configured"),
    [
        ("tiny-random", "local", False, True),
        ("cf:flux-2-dev", "cloudflare", True, False),
        ("bfl:flux-2-pro", "bfl", True, True),
    ],
)
def test_every_engine_says_who_does_the_work(
    options: EngineOptions, model: str, provider: str, remote: bool, configured: bool
) -> None:
    engine = create_engine(model, options, ProviderOptions(bfl_api_key="bfl-test-key"))
    try:
        assert all(hasattr(type(engine), member) for member in SEAM)
        assert (engine.provider, engine.remote, engine.configured()) == (provider, remote, configured)
    finally:
        engine.close()


def test_a_closed_local_engine_lets_go_of_its_pipeline(options: EngineOptions) -> None:
    engine = DiffusersEngine("tiny-random", options)
    engine.load()
    engine.close()
    assert engine._pipeline is None


def test_the_service_reports_each_models_status(
    make_settings: Callable[..., Settings], options: EngineOptions, tmp_path: Path
) -> None:
    local = DiffusersEngine("tiny-random", options)
    hosted = create_engine("bfl:flux-2-pro", options, ProviderOptions())  # no key: not configured
    services = build_services(
        make_settings(models=["tiny-random", "bfl:flux-2-pro"]), {"tiny-random": local, "bfl:flux-2-pro": hosted}
    )
    service = services.jobs
    try:
        before = {status.name: status for status in service.model_statuses()}
        assert before["tiny-random"].state is WorkerState.LOADING
        assert before["tiny-random"].capabilities is None  # known once loaded
        assert before["bfl:flux-2-pro"].capabilities is not None  # a provider's limits are documented
        assert (before["bfl:flux-2-pro"].remote, before["bfl:flux-2-pro"].configured) == (True, False)
        service.start()
        wait_for(lambda: service.model_status("tiny-random").state is WorkerState.READY)
        assert service.model_status("tiny-random").capabilities == local.capabilities
    finally:
        services.stop()
        hosted.close()
