"""Where each served model stands, as the API and the CLI read it: no worker internals.

A model is loading, ready or failed; its engine says who does the work (``local``, or a hosted
provider) and whether that is remote (billed per call). Capabilities are known once a local model
has loaded, and at once for a remote one (the provider's documented limits); a local model's
runtime (device, dtype, quantization, memory) once it has loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fluxserve.engines.base import Capabilities
from fluxserve.engines.runtime import EffectiveRuntime


class WorkerState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelStatus:
    name: str
    state: WorkerState
    provider: str
    """``local``, or the hosted provider that runs it (``cloudflare``, ``bfl``)."""
    remote: bool
    configured: bool
    """Whether the engine has what it needs to run (a hosted provider's credentials)."""
    capabilities: Capabilities | None
    """What the model accepts; None while a local model has not loaded."""
    runtime: EffectiveRuntime | None = None
    """How a loaded local model runs (device, dtype, quantization, memory); None for a hosted
    model or one not loaded."""
