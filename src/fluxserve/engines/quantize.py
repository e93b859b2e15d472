"""Quantized transformer and text encoder, through the libraries diffusers integrates.

A model's :class:`~fluxserve.engines.runtime.ModelRuntime` asks for each of its two large
components on its own (``quantize_transformer``, ``quantize_text_encoder``):

- ``bnb-8bit`` and ``bnb-4bit`` (NF4): bitsandbytes, which quantizes on a CUDA GPU only;
- ``torchao-int8`` and ``torchao-fp8``: torchao weight-only int8 and float8 (fp8 only where the
  device has fp8 arithmetic: CUDA compute capability 8.9 or newer);
- ``gguf``: the transformer read from a pre-quantized single file (``gguf_file``), in the
  layout the people who publish GGUF files use, through diffusers' single-file loader.

:func:`check_quantization` refuses, before anything loads, a choice this machine or the installed
libraries cannot run. :func:`quantized_components` loads the quantized components, to be handed
to the pipeline's ``from_pretrained``; a component quantized on the fly is saved once under the
cache folder and read back from there on the next start instead of being quantized again.
:func:`applied_quantization` says what each loaded component actually holds.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxserve.engines.runtime import ModelRuntime, Quantization
from fluxserve.errors import InvalidRequest, MissingExtra, ModelUnavailable

EXTRA = "quantization"
"""The fluxserve extra that installs every quantization library."""

_LIBRARY = {"bnb-8bit": "bitsandbytes", "bnb-4bit": "bitsandbytes", "torchao-int8": "torchao"}
_LIBRARY |= {"torchao-fp8": "torchao", "gguf": "gguf"}

_TEXT_ENCODERS = {"FluxPipeline": ("text_encoder_2",)}
"""The text encoders ``quantize_text_encoder`` applies to, where not ``text_encoder``: FLUX.1's
large one is its T5 encoder; its CLIP encoder is small and stays as it is."""

_FP8_CAPABILITY = (8, 9)
"""The first CUDA compute capability with fp8 arithmetic (Ada, Hopper and newer)."""


@dataclass(frozen=True)
class DeviceFacts:
    """What the quantization libraries need to know about the device a model runs on."""

    kind: str
    """``cpu``, ``cuda``, ``mps``...: the torch device type."""
    capability: tuple[int, int] | None = None
    """A CUDA device's compute capability."""

    @classmethod
    def of(cls, device: str, torch: Any) -> DeviceFacts:
        kind = torch.device(device).type
        if kind != "cuda" or not torch.cuda.is_available():
            return cls(kind)
        major, minor = torch.cuda.get_device_capability(device)
        return cls(kind, (int(major), int(minor)))


def requested(runtime: ModelRuntime) -> dict[str, Quantization]:
    """The quantization asked for each component, by option name, leaving out ``none``."""
    options = {"quantize_transformer": runtime.quantize_transformer}
    options["quantize_text_encoder"] = runtime.quantize_text_encoder
    return {option: method for option, method in options.items() if method != "none"}


def check_quantization(model: str, runtime: ModelRuntime, device: DeviceFacts) -> None:
    """Refuse, naming the model, the option and what to use instead, what cannot run here."""
    for option, method in requested(runtime).items():
        where = f"model {model!r}: {option} = {method!r}"
        if method == "gguf":
            _check_gguf(where, option, runtime)
        _import_library(method, where)
        if method.startswith("bnb-"):
            _check_bitsandbytes(where, option, method, runtime, device)
        if method == "torchao-fp8" and not _has_fp8(device):
            on = "a CPU" if device.kind == "cpu" else f"a {device.kind} device"
            if device.capability is not None:
                on = "a CUDA GPU of compute capability {}.{}".format(*device.capability)
            raise InvalidRequest(
                f"{where} needs fp8 arithmetic (CUDA compute capability 8.9 or newer: Ada, Hopper, Blackwell), "
                f"and this model runs on {on}; use torchao-int8 instead (the same memory: one byte a weight)",
                param=option,
            )


def _check_gguf(where: str, option: str, runtime: ModelRuntime) -> None:
    if option != "quantize_transformer":
        raise InvalidRequest(
            f"{where}: fluxserve reads GGUF files for the transformer only; quantize the text encoder "
            "with torchao-int8, bnb-8bit or bnb-4bit instead",
            param=option,
        )
    if not runtime.gguf_file:
        raise InvalidRequest(
            f"{where} needs gguf_file: a local .gguf file or repo_id/file.gguf on the Hugging Face hub "
            "(or quantize the transformer on the fly with torchao-int8, bnb-8bit or bnb-4bit)",
            param="gguf_file",
        )
    if runtime.offload == "sequential":
        # diffusers 0.42's GGUFParameter cannot be rebuilt by accelerate's per-layer offload hooks
        # (diffusers issue 14691): the first forward pass fails with KeyError: None.
        raise InvalidRequest(
            f"{where} cannot run with offload = 'sequential' (diffusers cannot move GGUF weights layer by "
            "layer); use offload = 'model' instead, or bnb-4bit with offload = 'model' for a smaller transformer",
            param="offload",
        )


def _check_bitsandbytes(
    where: str, option: str, method: Quantization, runtime: ModelRuntime, device: DeviceFacts
) -> None:
    if device.kind != "cuda":
        raise InvalidRequest(
            f"{where} needs a CUDA GPU (bitsandbytes quantizes on the GPU) and this model runs on "
            f"{device.kind}; use torchao-int8 instead",
            param=option,
        )
    if method == "bnb-4bit" and runtime.offload == "sequential":
        # bitsandbytes re-quantizes 4-bit weights that accelerate moves layer by layer and fails
        # ("Blockwise quantization only supports 16/32-bit floats"); its maintainers will not change it.
        raise InvalidRequest(
            f"{where} cannot run with offload = 'sequential' (bitsandbytes cannot move 4-bit weights layer by "
            "layer); use offload = 'model' instead",
            param="offload",
        )


def _has_fp8(device: DeviceFacts) -> bool:
    return device.kind == "cuda" and device.capability is not None and device.capability >= _FP8_CAPABILITY


def quiet_quantization_logs() -> None:
    """torchao logs each optional kernel this machine cannot load, and torch a deprecation per torchao enum,
    whenever diffusers first imports it (at the first model load, quantized or not)."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _import_library(method: Quantization, where: str) -> Any:
    library = _LIBRARY[method]
    try:
        return importlib.import_module(library)
    except ImportError:
        raise MissingExtra(EXTRA, where, library) from None


def quantized_components(
    model: str,
    path: Path,
    runtime: ModelRuntime,
    *,
    dtype: Any,
    device: str,
    cache_dir: Path,
    allow_download: bool,
) -> dict[str, Any]:
    """The quantized components of the pipeline at ``path``, by component name, for ``from_pretrained``.

    Call :func:`check_quantization` first.
    """
    loader = _Loader(path, json.loads((path / "model_index.json").read_text()), dtype, device, cache_dir)
    components: dict[str, Any] = {}
    if runtime.quantize_transformer == "gguf":
        components["transformer"] = loader.gguf(_gguf_path(model, runtime.gguf_file or "", allow_download))
    elif runtime.quantize_transformer != "none":
        components["transformer"] = loader.quantized("transformer", runtime.quantize_transformer)
    if runtime.quantize_text_encoder != "none":
        for name in _TEXT_ENCODERS.get(str(loader.index.get("_class_name")), ("text_encoder",)):
            components[name] = loader.quantized(name, runtime.quantize_text_encoder)
    return components


@dataclass(frozen=True)
class _Loader:
    """Loads the components of the pipeline at ``path`` (``index``: its ``model_index.json``)."""

    path: Path
    index: dict[str, Any]
    dtype: Any
    device: str
    cache_dir: Path

    def model_class(self, component: str) -> Any:
        library_name, class_name = self.index[component]
        return getattr(importlib.import_module(library_name), class_name)

    def quantized(self, component: str, method: Quantization) -> Any:
        """One component, quantized once and then read back from the cache folder."""
        model_class = self.model_class(component)
        # bitsandbytes quantizes while it loads, onto the GPU it is given (else the current one).
        placement = {"device_map": {"": self.device}} if method.startswith("bnb-") else {}
        cached = quantized_cache_path(self.cache_dir, self.path, component, method)
        if (cached / "config.json").is_file():
            return model_class.from_pretrained(cached, dtype=self.dtype, **placement)
        config = _quantization_config(self.index[component][0], method, self.dtype)
        model = model_class.from_pretrained(
            self.path, subfolder=component, quantization_config=config, dtype=self.dtype, **placement
        )
        _save(model, cached)
        return model

    def gguf(self, gguf_file: Path) -> Any:
        """The transformer from a GGUF file; its config comes from the model folder, not guessed from the file.

        diffusers guesses a config from a file's tensor names and reads it from the hub: every FLUX.2
        file reads as FLUX.2 [dev], which is wrong for klein, and the hub may be out of reach.
        """
        from diffusers import GGUFQuantizationConfig

        return self.model_class("transformer").from_single_file(
            str(gguf_file),
            config=str(self.path),
            subfolder="transformer",
            quantization_config=GGUFQuantizationConfig(compute_dtype=self.dtype),
            dtype=self.dtype,
            local_files_only=True,
        )


def _quantization_config(library_name: str, method: Quantization, dtype: Any) -> Any:
    """The quantization config of ``library_name`` (diffusers or transformers) for ``method``."""
    library = importlib.import_module(library_name)
    if method == "bnb-8bit":
        return library.BitsAndBytesConfig(load_in_8bit=True)
    if method == "bnb-4bit":
        return library.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    weights = Int8WeightOnlyConfig() if method == "torchao-int8" else Float8WeightOnlyConfig()
    return library.TorchAoConfig(weights)


def quantized_cache_path(cache_dir: Path, path: Path, component: str, method: Quantization) -> Path:
    """Where ``component`` of the model at ``path``, quantized with ``method``, is kept.

    The key covers the model folder (a hub snapshot's folder is its revision), the component's
    files (so a local folder whose weights change is quantized again) and the version of the
    library that quantized it (whose format may change).
    """
    digest = hashlib.sha256(str(path.resolve()).encode())
    for file in sorted((path / component).rglob("*")):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    library = _LIBRARY[method]
    digest.update(f"{library}=={importlib.metadata.version(library)}".encode())
    return cache_dir / "quantized" / f"{path.name}-{digest.hexdigest()[:16]}" / f"{component}-{method}"


def _save(model: Any, target: Path) -> None:
    """Save next to ``target`` and move it in place, so a folder there is always complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another process saved the same component first; its copy is as good.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _gguf_path(model: str, gguf_file: str, allow_download: bool) -> Path:
    """A local ``.gguf`` file, or ``repo_id/file.gguf`` from the Hugging Face cache (or hub)."""
    local = Path(gguf_file).expanduser()
    if local.is_file():
        return local
    if local.is_absolute() or gguf_file.startswith((".", "~")) or gguf_file.count("/") < 2:
        raise ModelUnavailable(
            f"model {model!r}: gguf_file {gguf_file!r} is not a file; give a local .gguf file or "
            "repo_id/file.gguf on the Hugging Face hub"
        )
    from huggingface_hub import constants, hf_hub_download

    owner, name, filename = gguf_file.split("/", 2)
    offline = not allow_download or constants.HF_HUB_OFFLINE
    try:
        return Path(hf_hub_download(f"{owner}/{name}", filename, local_files_only=offline))
    except Exception as error:
        why = "downloads are off" if offline else f"the download failed: {error}"
        raise ModelUnavailable(
            f"model {model!r}: gguf_file {gguf_file!r} is not in the Hugging Face cache and {why}. "
            f"To get it, download it with `hf download {owner}/{name} {filename}`"
        ) from None


@dataclass(frozen=True)
class AppliedQuantization:
    """What one loaded component holds."""

    method: Quantization
    detail: str
    """The library's own words: the torchao config, the GGUF tensor types..."""
    weight_bytes: int
    """The bytes its parameters and buffers take, quantized."""


def applied_quantization(pipeline: Any) -> dict[str, AppliedQuantization]:
    """Each module component of a loaded pipeline and the quantization it actually holds."""
    import torch

    applied = {}
    for name, module in pipeline.components.items():
        if isinstance(module, torch.nn.Module):
            method, detail = _method_of(module)
            applied[name] = AppliedQuantization(method, detail, weight_bytes(module))
    return applied


def quantization_of(module: Any) -> Quantization:
    """The quantization a loaded diffusers or transformers model holds (``none`` for ``None``)."""
    return _method_of(module)[0]


def text_encoder_name(pipeline: Any) -> str:
    """The component ``quantize_text_encoder`` applies to (FLUX.1: the T5 encoder)."""
    return _TEXT_ENCODERS.get(type(pipeline).__name__, ("text_encoder",))[0]


def _method_of(module: Any) -> tuple[Quantization, str]:
    quantizer = getattr(module, "hf_quantizer", None)
    config = getattr(quantizer, "quantization_config", None)
    kind = str(getattr(getattr(config, "quant_method", None), "value", ""))
    if kind == "gguf":
        types = sorted({param.quant_type.name for param in module.parameters() if hasattr(param, "quant_type")})
        return "gguf", ", ".join(types)
    if kind == "torchao":
        weights = type(getattr(config, "quant_type", None)).__name__
        return ("torchao-fp8" if weights.startswith("Float8") else "torchao-int8"), weights
    if kind == "bitsandbytes":
        if getattr(config, "load_in_4bit", False):
            return "bnb-4bit", str(getattr(config, "bnb_4bit_quant_type", "nf4"))
        return "bnb-8bit", "int8"
    return "none", ""


def weight_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers, counting what quantized tensors really hold."""
    tensors = {id(tensor): tensor for tensor in (*module.parameters(), *module.buffers())}
    return sum(_tensor_bytes(tensor) for tensor in tensors.values())


def _tensor_bytes(tensor: Any) -> int:
    """torchao's quantized tensors wrap inner tensors (the data and its scales); bitsandbytes' 4-bit
    weights keep their scales beside the packed data."""
    if hasattr(tensor, "__tensor_flatten__"):
        inner, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in inner)
    quant_state = getattr(tensor, "quant_state", None)
    scales = _tensor_bytes(quant_state.absmax) if quant_state is not None else 0
    return int(tensor.numel() * tensor.element_size()) + scales
