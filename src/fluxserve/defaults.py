"""Defaults that the settings, the engines and the CLI share, declared once.

A leaf: :mod:`fluxserve.settings` (what a server is configured with) and the engines' option
objects (which the library, the CLI and the tests also build by hand) both start from these, and
neither imports the other. A default only the settings use stays on its field in ``Settings``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

DEFAULT_MODEL = "flux.2-klein-4b"
"""The model served, or generated with, when none is named."""

CLOUDFLARE_BASE_URL = "https://api.cloudflare.com/client/v4"
CLOUDFLARE_CONCURRENCY = 4
"""Workers AI requests in flight at once."""

BflRegion = Literal["global", "eu", "us"]
BFL_BASE_URLS: dict[BflRegion, str] = {
    "global": "https://api.bfl.ai",
    "eu": "https://api.eu.bfl.ai",
    "us": "https://api.us.bfl.ai",
}
"""Black Forest Labs' API, by region."""
BFL_CONCURRENCY = 24
"""BFL tasks in flight at once (BFL allows 24)."""

PROVIDER_TIMEOUT_SECONDS = 120.0
"""The longest one call to a hosted provider may take."""

# How a local model runs: the values the settings accept and ``engines.runtime.ModelRuntime`` holds.
Offload = Literal["none", "model", "sequential"]
OFFLOADS: tuple[Offload, ...] = ("none", "model", "sequential")
Dtype = Literal["bfloat16", "float16", "float32"]
DTYPES: tuple[Dtype, ...] = ("bfloat16", "float16", "float32")
Quantization = Literal["none", "bnb-8bit", "bnb-4bit", "torchao-int8", "torchao-fp8", "gguf"]
QUANTIZATIONS: tuple[Quantization, ...] = ("none", "bnb-8bit", "bnb-4bit", "torchao-int8", "torchao-fp8", "gguf")
"""``gguf`` is for the transformer only: a pre-quantized single file (``gguf_file``)."""
StepCache = Literal["none", "first-block", "taylorseer", "magcache"]
STEP_CACHES: tuple[StepCache, ...] = ("none", "first-block", "taylorseer", "magcache")
PROMPT_CACHE_MB = 256.0
"""Prompt embeddings kept for reuse per model, in MiB (0 turns the cache off)."""


def default_data_dir() -> Path:
    """Where a server keeps its jobs, images and secrets: ``$XDG_DATA_HOME/fluxserve``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "fluxserve"


def default_cache_dir() -> Path:
    """Where tiny models are built: ``$XDG_CACHE_HOME/fluxserve``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fluxserve"


# LoRA adapters: what a request may name, and how many a model keeps loaded.
MAX_LORAS_PER_REQUEST = 3
"""Adapters one request may combine."""
LORA_CACHE_SIZE = 4
"""Adapters each local model keeps loaded (least recently used first out)."""
LORA_HOTSWAP_RANK = 64
"""With compile on: the highest adapter rank a model hot-swaps (every slot is padded to it)."""
LORA_SCALE_RANGE = (-2.0, 2.0)
"""The scales a request may give an adapter (0 leaves the model as without it)."""

ContentFilterScope = Literal["off", "refs", "outputs", "both"]
"""Which images the content filter judges: none, reference images, generated images, or both."""
CONTENT_FILTER_MODEL = "Falconsai/nsfw_image_detection"
"""A ViT fine-tuned to tell ``normal`` from ``nsfw`` images (Apache-2.0)."""
