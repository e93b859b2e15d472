"""What the routers are handed: the server's parts, built once by :func:`fluxserve.api.app.build_services`.

Each route names the parts it uses as parameters (``jobs: JobsDep``, ``keys: KeysDep``...):
FastAPI resolves them from the app, so no handler reaches through one part into another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from fluxserve.accounts.keystore import KeyStore
from fluxserve.accounts.usage import UsageReports
from fluxserve.db import Database
from fluxserve.engines.loras import LoraCatalog
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.service import JobService
from fluxserve.settings import Settings
from fluxserve.storage.files import FileStore
from fluxserve.storage.signing import UrlSigner
from fluxserve.telemetry import Telemetry


@dataclass(frozen=True)
class Services:
    """The server's parts; kept on ``app.state.services``."""

    settings: Settings
    db: Database
    jobs: JobService
    keys: KeyStore
    usage: UsageReports
    files: FileStore
    bus: EventBus
    signer: UrlSigner
    clock: Callable[[], float]
    """The server's clock: it expires keys and URLs and counts rates and quotas."""
    decode_slots: asyncio.Semaphore
    """Requests that may decode reference images at once, server-wide (``max_concurrent_decodes``)."""
    started: int
    """When the server started (Unix seconds): the ``created`` of its model cards."""
    loras: LoraCatalog
    """The LoRA adapters requests may name (``lora_dir``, the hub cache)."""
    aliases: Mapping[str, str]
    """Provider model names (``flux-2-dev``) -> served models: ``model_aliases`` over the defaults."""
    telemetry: Telemetry
    """Metrics and the tracer (``metrics``, ``otlp_endpoint``)."""

    def start(self) -> None:
        self.jobs.start()

    def stop(self) -> None:
        """Stop the workers and the webhook sender, then close the database and the file store."""
        try:
            self.jobs.stop()
        finally:
            self.files.close()
            self.db.close()
            self.telemetry.tracer.close()


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def _settings(request: Request) -> Settings:
    return services(request).settings


def _jobs(request: Request) -> JobService:
    return services(request).jobs


def _keys(request: Request) -> KeyStore:
    return services(request).keys


def _usage(request: Request) -> UsageReports:
    return services(request).usage


def _files(request: Request) -> FileStore:
    return services(request).files


def _bus(request: Request) -> EventBus:
    return services(request).bus


def _signer(request: Request) -> UrlSigner:
    return services(request).signer


def _loras(request: Request) -> LoraCatalog:
    return services(request).loras


def _aliases(request: Request) -> Mapping[str, str]:
    return services(request).aliases


def _now(request: Request) -> float:
    return services(request).clock()


ServicesDep = Annotated[Services, Depends(services)]
SettingsDep = Annotated[Settings, Depends(_settings)]
JobsDep = Annotated[JobService, Depends(_jobs)]
KeysDep = Annotated[KeyStore, Depends(_keys)]
UsageDep = Annotated[UsageReports, Depends(_usage)]
FilesDep = Annotated[FileStore, Depends(_files)]
EventsDep = Annotated[EventBus, Depends(_bus)]
SignerDep = Annotated[UrlSigner, Depends(_signer)]
LorasDep = Annotated[LoraCatalog, Depends(_loras)]
AliasesDep = Annotated[Mapping[str, str], Depends(_aliases)]
NowDep = Annotated[float, Depends(_now)]
"""The server clock's time when the request is handled."""


def _started(request: Request) -> int:
    return services(request).started


StartedDep = Annotated[int, Depends(_started)]
"""When the server started (Unix seconds)."""
