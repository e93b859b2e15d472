"""Build the engine for a model name. Hosted providers will register their prefixes here."""

from __future__ import annotations

from fluxserve.engines.base import Engine
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions


def create_engine(model: str, options: EngineOptions) -> Engine:
    """The engine that runs ``model``: a short name, a repository id or a local folder."""
    return DiffusersEngine(model, options)
