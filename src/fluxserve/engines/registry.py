"""Build the engine for a model name: a local diffusers model, or ``cf:``/``bfl:`` for a hosted one."""

from __future__ import annotations

from fluxserve.engines.base import Engine
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.hosted.bfl import BflEngine
from fluxserve.engines.hosted.catalog import BFL, CLOUDFLARE, HOSTED, is_hosted
from fluxserve.engines.hosted.cloudflare import CloudflareEngine
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.engines.loading import EngineOptions
from fluxserve.errors import UnknownModel


def create_engine(model: str, options: EngineOptions, providers: ProviderOptions | None = None) -> Engine:
    """The engine that runs ``model``: a short name, a repository id, a local folder, or a hosted model."""
    if is_hosted(model):
        return create_hosted_engine(model, providers or ProviderOptions())
    return DiffusersEngine(model, options)


def create_hosted_engine(model: str, providers: ProviderOptions) -> Engine:
    hosted = HOSTED.get(model)
    if hosted is None:
        known = ", ".join(HOSTED)
        raise UnknownModel(f"no hosted model {model!r}; known: {known}")
    if hosted.provider == CLOUDFLARE:
        return CloudflareEngine(hosted, providers)
    if hosted.provider == BFL:
        return BflEngine(hosted, providers)
    raise UnknownModel(f"{model}: the {hosted.provider} engine is not built yet")
