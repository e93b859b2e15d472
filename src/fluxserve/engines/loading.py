"""Find a model's weights and load them into a diffusers pipeline.

A model is named by a short name (``flux.2-klein-4b``), a Hugging Face repository id
(``black-forest-labs/FLUX.2-klein-4B``), a local folder in diffusers layout, or a tiny
random-weight model (``tiny-random``). Every route ends in the same place: a local folder
with a ``model_index.json``, loaded with ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from fluxserve.engines.catalog import MODELS, SUPPORTED_PIPELINES, ModelSpec
from fluxserve.engines.loras import LoraOptions
from fluxserve.engines.quantize import (
    DeviceFacts,
    check_quantization,
    quantized_components,
    quiet_quantization_logs,
)
from fluxserve.engines.runtime import DTYPES, ModelRuntime
from fluxserve.engines.speed import check_speed_options
from fluxserve.errors import InvalidRequest, MissingExtra, ModelUnavailable, UnknownModel


@dataclass(frozen=True)
class EngineOptions:
    """Where a local model comes from (``cache_dir``, ``allow_download``) and how it runs (``runtime``)."""

    cache_dir: Path
    allow_download: bool = True
    runtime: ModelRuntime = field(default_factory=ModelRuntime)
    loras: LoraOptions = field(default_factory=LoraOptions)
    """Where LoRA adapters come from, and how many the model keeps loaded."""


def import_diffusers() -> tuple[ModuleType, ModuleType]:
    """Import torch and diffusers, or explain which extra to install."""
    quiet_quantization_logs()
    try:
        import diffusers
        import torch
        import transformers
    except ImportError as error:
        raise MissingExtra("diffusers", "local generation", error.name or "a dependency") from None
    _quiet(diffusers, transformers)
    return torch, diffusers


def _quiet(*libraries: ModuleType) -> None:
    """fluxserve reports its own progress: turn off the libraries' bars and chatter."""
    for library in libraries:
        library.utils.logging.disable_progress_bar()
        library.utils.logging.set_verbosity_error()


@dataclass(frozen=True)
class ModelLocation:
    name: str
    path: Path
    spec: ModelSpec | None


def _how_to_get(repo_id: str, gated: bool) -> str:
    steps = f"download it with `hf download {repo_id}`"
    if gated:
        steps = f"accept its licence at https://huggingface.co/{repo_id}, set HF_TOKEN, then {steps}"
    return f"{steps} (or pass a local folder in diffusers layout as the model)"


def _snapshot(name: str, repo_id: str, gated: bool, allow_download: bool) -> Path:
    _, diffusers = import_diffusers()
    from huggingface_hub import constants

    try:
        return Path(diffusers.DiffusionPipeline.download(repo_id, local_files_only=True))
    except Exception as error:
        missing = error
    offline = constants.HF_HUB_OFFLINE
    if allow_download and not offline:
        try:
            return Path(diffusers.DiffusionPipeline.download(repo_id))
        except Exception as error:
            missing = error
    why = "downloads are off" if not allow_download or offline else f"the download failed: {missing}"
    raise ModelUnavailable(
        f"model {name!r} ({repo_id}) is not in the Hugging Face cache at {constants.HF_HUB_CACHE} and "
        f"{why}. To get it, {_how_to_get(repo_id, gated)}"
    )


def locate_model(name: str, options: EngineOptions) -> ModelLocation:
    """Resolve a model name to a local folder, building or downloading it if allowed."""
    from fluxserve.engines.tiny import TINY_MODELS, tiny_model_path

    spec = MODELS.get(name)
    if spec is not None and spec.is_tiny:
        import_diffusers()
        return ModelLocation(name, tiny_model_path(spec.source.removeprefix("tiny:"), options.cache_dir), spec)
    if spec is not None and spec.repo_id is not None:
        return ModelLocation(name, _snapshot(name, spec.repo_id, spec.gated, options.allow_download), spec)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ModelUnavailable(
                f"{folder} has no model_index.json; a local model must be a folder in diffusers layout"
            )
        return ModelLocation(name, folder, None)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return ModelLocation(name, _snapshot(name, name, False, options.allow_download), None)
    known = ", ".join(sorted(set(MODELS) | set(TINY_MODELS)))
    raise UnknownModel(
        f"unknown model {name!r}: use one of {known}, a Hugging Face repository id (org/name), "
        "or a local folder in diffusers layout"
    )


# Components that transformers only provides when an optional package imports, and the
# fluxserve extra that installs it. FLUX.2 [dev]'s tokenizer is a PixtralProcessor.
_COMPONENT_NEEDS = {"PixtralProcessor": ("flux2-dev", "torchvision")}


def pipeline_class_name(path: Path) -> str:
    """The pipeline class named by ``model_index.json``, once its components can be loaded here."""
    index = json.loads((path / "model_index.json").read_text())
    class_name = str(index.get("_class_name", ""))
    if class_name not in SUPPORTED_PIPELINES:
        supported = ", ".join(sorted(SUPPORTED_PIPELINES))
        raise ModelUnavailable(f"{path} holds a {class_name or 'unknown'} pipeline; fluxserve runs {supported}")
    for component in index.values():
        needs = _COMPONENT_NEEDS.get(component[1]) if isinstance(component, list) and len(component) == 2 else None
        if needs is not None and importlib.util.find_spec(needs[1]) is None:
            raise MissingExtra(needs[0], f"{path.name} ({component[1]})", needs[1])
    return class_name


def pick_device(requested: str | None, torch: Any) -> str:
    if requested:
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, requested: str | None, torch: Any) -> Any:
    if requested is not None:
        if requested not in DTYPES:
            raise InvalidRequest(f"dtype {requested!r} is not one of {', '.join(DTYPES)}", param="dtype")
        return getattr(torch, requested)
    return torch.float32 if device == "cpu" else torch.bfloat16


def load_pipeline(location: ModelLocation, options: EngineOptions) -> tuple[Any, str]:
    """Load the pipeline at ``location`` onto the chosen device; return it and its device."""
    torch, diffusers = import_diffusers()
    class_name = pipeline_class_name(location.path)
    runtime = options.runtime
    device = pick_device(runtime.device, torch)
    dtype = pick_dtype(device, runtime.dtype, torch)
    if runtime.offload != "none" and device == "cpu":
        raise InvalidRequest("CPU offload needs a GPU; drop --offload on a CPU-only machine", param="offload")
    check_speed_options(class_name, location.name, runtime)  # before the weights load
    check_quantization(location.name, runtime, DeviceFacts.of(device, torch))
    components = quantized_components(
        location.name,
        location.path,
        runtime,
        dtype=dtype,
        device=device,
        cache_dir=options.cache_dir,
        allow_download=options.allow_download,
    )
    pipeline = getattr(diffusers, class_name).from_pretrained(location.path, dtype=dtype, **components)
    if runtime.offload == "model":
        pipeline.enable_model_cpu_offload(device=device)
    elif runtime.offload == "sequential":
        pipeline.enable_sequential_cpu_offload(device=device)
    else:
        pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, device
