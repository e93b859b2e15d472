"""Count a pipeline's parameters from its component configs, without loading a weight.

Each component listed in ``model_index.json`` that has a ``config.json`` (the transformer,
the text encoders, the VAE) is built on PyTorch's meta device from its config, with the same
diffusers or transformers class that loads the real weights: the shapes are real, no memory
is allocated, and a 32B transformer takes a fraction of a second. Counting this way reads the
architecture from the configs (layers, widths, tied embeddings...), never from a table of
known models.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxserve.engines.loading import import_diffusers
from fluxserve.errors import ModelUnavailable


@dataclass(frozen=True)
class ComponentCount:
    """The sizes of one component, as built from its config."""

    name: str
    """Its key in ``model_index.json``: ``transformer``, ``text_encoder``, ``vae``..."""
    class_name: str
    parameters: int
    buffer_elements: int
    """Buffers that move with the weights (rotary tables, norms' running stats...)."""
    linear_weights: int
    """Elements in ``nn.Linear`` weights other than a language model's output head: what the
    quantization libraries replace (everything else stays in the compute dtype)."""
    largest_linear: int
    """Elements in the biggest such weight: what a quantized layer dequantizes at once."""
    largest_leaf: int
    """Elements held directly by the biggest single module: what sequential offload moves at once."""
    config: dict[str, Any]


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model part of a config (a multimodal model nests it under ``text_config``)."""
    nested = config.get("text_config")
    return nested if isinstance(nested, dict) else config


def _count(name: str, class_name: str, module: Any, config: dict[str, Any]) -> ComponentCount:
    torch, _ = import_diffusers()
    linear_weights = largest_linear = largest_leaf = 0
    for module_name, child in module.named_modules():
        own = sum(p.numel() for p in child.parameters(recurse=False))
        largest_leaf = max(largest_leaf, own)
        if isinstance(child, torch.nn.Linear) and not module_name.endswith("lm_head"):
            linear_weights += child.weight.numel()
            largest_linear = max(largest_linear, child.weight.numel())
    return ComponentCount(
        name=name,
        class_name=class_name,
        parameters=sum(p.numel() for p in module.parameters()),
        buffer_elements=sum(b.numel() for b in module.buffers()),
        linear_weights=linear_weights,
        largest_linear=largest_linear,
        largest_leaf=largest_leaf,
        config=config,
    )


def _build_on_meta(library: str, class_name: str, folder: Path) -> tuple[Any, dict[str, Any]]:
    torch, diffusers = import_diffusers()
    import transformers

    if library == "diffusers":
        model_class = getattr(diffusers, class_name)
        config = dict(model_class.load_config(folder))
        with torch.device("meta"):
            return model_class.from_config(config), config
    model_class = getattr(transformers, class_name)
    loaded = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        module = model_class(loaded)
    return module, json.loads((folder / "config.json").read_text())


def count_components(folder: Path) -> tuple[ComponentCount, ...]:
    """The parameter counts of every model component of the pipeline in ``folder``."""
    return _count_components(str(folder.resolve()))


@functools.lru_cache(maxsize=32)
def _count_components(folder: str) -> tuple[ComponentCount, ...]:
    root = Path(folder)
    try:
        index = json.loads((root / "model_index.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"cannot read {root / 'model_index.json'}: {error}") from None
    counts = []
    for name, entry in index.items():
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in ("diffusers", "transformers")):
            continue
        if not (root / name / "config.json").is_file() or name.startswith(("tokenizer", "scheduler")):
            continue
        try:
            module, config = _build_on_meta(entry[0], entry[1], root / name)
        except (AttributeError, OSError, ValueError, TypeError) as error:
            raise ModelUnavailable(f"cannot build {name} ({entry[1]}) from {root / name}: {error}") from None
        counts.append(_count(name, entry[1], module, config))
    if not any(c.name == "transformer" for c in counts):
        raise ModelUnavailable(f"{root} has no transformer/config.json to plan from")
    return tuple(counts)


def text_config(count: ComponentCount) -> dict[str, Any]:
    """The language-model settings of a text encoder's config."""
    return _text_config(count.config)
