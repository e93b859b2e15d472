"""How one local model runs: device, dtype, offload, quantization and speed options.

Each served model has its own :class:`ModelRuntime`; the server-wide settings give the defaults
(:mod:`fluxserve.wiring` builds them). Every field's meaning is the library's own:

- ``quantize_transformer`` / ``quantize_text_encoder``: weights through the quantization
  libraries diffusers integrates (bitsandbytes 8-bit and 4-bit NF4, torchao int8 and fp8
  weight-only); ``gguf`` loads the transformer from the pre-quantized single file ``gguf_file``.
- ``step_cache``: one of diffusers' cache hooks on the transformer (``diffusers.hooks``).
- ``compile``: ``torch.compile`` of the transformer's repeated blocks (regional compile),
  done during warm-up.
- ``attention``: a diffusers attention backend name (``native``, ``flash``, ``sage``...);
  ``None`` keeps the library's default.
- ``prompt_cache_mb``: bytes of prompt embeddings kept for reuse (0 turns the cache off).
- ``memory_gb``: the memory budget the load-time memory plan checks against.
"""

from __future__ import annotations

from dataclasses import dataclass

# Declared once in fluxserve.defaults, which the settings validate against too.
from fluxserve.defaults import (
    DTYPES,
    OFFLOADS,
    PROMPT_CACHE_MB,
    QUANTIZATIONS,
    STEP_CACHES,
    Dtype,
    Offload,
    Quantization,
    StepCache,
)

__all__ = [
    "DTYPES",
    "OFFLOADS",
    "QUANTIZATIONS",
    "STEP_CACHES",
    "Dtype",
    "EffectiveRuntime",
    "ModelRuntime",
    "Offload",
    "Quantization",
    "StepCache",
]


@dataclass(frozen=True)
class ModelRuntime:
    """One model's runtime; ``None`` picks what suits the machine (see :mod:`fluxserve.engines.loading`)."""

    device: str | None = None
    dtype: str | None = None
    offload: Offload = "none"
    quantize_transformer: Quantization = "none"
    quantize_text_encoder: Quantization = "none"
    gguf_file: str | None = None
    """With ``quantize_transformer = "gguf"``: a local ``.gguf`` file, or ``repo_id/file.gguf`` on the hub."""
    step_cache: StepCache = "none"
    compile: bool = False
    attention: str | None = None
    prompt_cache_mb: float = PROMPT_CACHE_MB
    memory_gb: float | None = None
    """Device memory (GiB) the model may use; ``None``: the device's free memory at load (see memory_check)."""


@dataclass(frozen=True)
class EffectiveRuntime:
    """How a loaded model actually runs, read from the loaded pipeline (see ``engines.effective``).

    ``device`` and ``dtype`` are what was picked (never ``None``); the quantizations are what the
    loaded modules carry; ``memory_bytes`` counts the parameters and buffers resident on ``device``
    just after load (with offload, most weights wait in CPU memory and are not counted).
    """

    device: str
    dtype: str
    offload: Offload
    quantize_transformer: str
    quantize_text_encoder: str
    step_cache: str
    compile: bool
    attention: str
    prompt_cache_mb: float
    memory_bytes: int
