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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Offload = Literal["none", "model", "sequential"]
DTYPES = ("bfloat16", "float16", "float32")
Quantization = Literal["none", "bnb-8bit", "bnb-4bit", "torchao-int8", "torchao-fp8", "gguf"]
QUANTIZATIONS: tuple[Quantization, ...] = ("none", "bnb-8bit", "bnb-4bit", "torchao-int8", "torchao-fp8", "gguf")
StepCache = Literal["none", "first-block", "taylorseer", "magcache"]
STEP_CACHES: tuple[StepCache, ...] = ("none", "first-block", "taylorseer", "magcache")


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
    prompt_cache_mb: float = 256.0
