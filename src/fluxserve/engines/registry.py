"""Build the engine for a model name: a local diffusers model, or ``cf:``/``bfl:`` for a hosted one."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from fluxserve.engines.base import Engine
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.hosted.bfl import BflEngine
from fluxserve.engines.hosted.catalog import BFL, CLOUDFLARE, HOSTED, is_hosted
from fluxserve.engines.hosted.cloudflare import CloudflareEngine
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.engines.loading import EngineOptions
from fluxserve.errors import UnknownModel


def create_engines(options: Mapping[str, EngineOptions], providers: ProviderOptions) -> dict[str, Engine]:
    """An engine per model, each with its own options (a hosted model ignores them); hosted models
    of one provider share its limit of calls in flight."""
    slots: dict[str, threading.Semaphore] = {
        CLOUDFLARE: threading.BoundedSemaphore(providers.cloudflare_concurrency),
        BFL: threading.BoundedSemaphore(providers.bfl_concurrency),
    }
    return {model: create_engine(model, each, providers, slots=slots) for model, each in options.items()}


def create_engine(
    model: str,
    options: EngineOptions,
    providers: ProviderOptions | None = None,
    *,
    slots: dict[str, threading.Semaphore] | None = None,
) -> Engine:
    """The engine that runs ``model``: a short name, a repository id, a local folder, or a hosted model."""
    if is_hosted(model):
        return create_hosted_engine(model, providers or ProviderOptions(), slots or {})
    return DiffusersEngine(model, options)


def create_hosted_engine(model: str, providers: ProviderOptions, slots: dict[str, threading.Semaphore]) -> Engine:
    hosted = HOSTED.get(model)
    if hosted is None:
        known = ", ".join(HOSTED)
        raise UnknownModel(f"no hosted model {model!r}; known: {known}")
    if hosted.provider == CLOUDFLARE:
        return CloudflareEngine(hosted, providers, slots=slots.get(CLOUDFLARE))
    if hosted.provider == BFL:
        return BflEngine(hosted, providers, slots=slots.get(BFL))
    raise UnknownModel(f"{model}: the {hosted.provider} engine is not built yet")
