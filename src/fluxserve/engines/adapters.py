"""The LoRA adapters one loaded pipeline holds: a small LRU, switched per request.

Everything goes through diffusers' own LoRA loader of the pipeline's family (FLUX.2's
``Flux2LoraLoaderMixin``, FLUX.1's ``FluxLoraLoaderMixin``, both backed by peft): adapters are
loaded with ``load_lora_weights(..., adapter_name=...)``, activated with their scales by
``set_adapters``, switched off with ``disable_lora`` for a request without any (peft's layers
then run their base layer alone, so the output is byte-identical to a pipeline that never loaded
one), and unloaded with ``delete_adapters`` when the LRU is full. The pipeline itself is never
reloaded.

diffusers loads an adapter whose tensors name modules the model lacks with a warning only, so
each file is first read through the family's ``lora_state_dict`` and checked against the
transformer's modules and shapes: an adapter for another model is refused, not half-applied.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fluxserve.engines.base import LoraChoice
from fluxserve.engines.loras import LoraCatalog, LoraFile
from fluxserve.errors import InvalidRequest, MissingExtra


@dataclass(frozen=True)
class _Loaded:
    adapter_name: str
    file: LoraFile


class LoadedAdapters:
    """The adapters in one pipeline. Not thread-safe: the engine calls it under its lock."""

    def __init__(self, pipeline: Any, catalog: LoraCatalog, family: str, model: str) -> None:
        self._pipeline = pipeline
        self._catalog = catalog
        self._family = family
        self._model = model
        self._loaded: OrderedDict[tuple[str, int, int], _Loaded] = OrderedDict()
        self._enabled = False
        self.loads = 0
        """Adapter files loaded into the pipeline so far (each LRU miss is one)."""

    @property
    def resident(self) -> list[str]:
        """The names of the adapters loaded now, least recently used first."""
        return [loaded.file.name for loaded in self._loaded.values()]

    def activate(self, choices: Sequence[LoraChoice]) -> bool:
        """Make exactly ``choices`` active (scale 0 ones left out); True if one changes the text encoder."""
        wanted = [(index, choice) for index, choice in enumerate(choices) if choice.scale != 0]
        if not wanted:
            self._disable()
            return False
        files = self._catalog.check([choice for _, choice in wanted], self._family, model=self._model)
        keep = {file.identity for file in files}
        active = sorted(  # by name: peft sums adapters in list order, so any order gives the same image
            (choice.name, self._ensure(file, f"loras[{index}].name", keep), choice.scale)
            for (index, choice), file in zip(wanted, files, strict=True)
        )
        self._pipeline.enable_lora()
        self._pipeline.set_adapters([name for _, name, _ in active], [scale for _, _, scale in active])
        self._enabled = True
        return any(file.text_encoder for file in files)

    def _disable(self) -> None:
        if self._enabled and self._loaded:  # with none loaded, peft's layers hold nothing to apply
            self._pipeline.disable_lora()
        self._enabled = False

    def _ensure(self, file: LoraFile, param: str, keep: set[tuple[str, int, int]]) -> str:
        found = self._loaded.get(file.identity)
        if found is not None:
            self._loaded.move_to_end(file.identity)
            return found.adapter_name
        self._evict(keep)
        adapter_name = "lora_" + hashlib.sha256(repr(file.identity).encode()).hexdigest()[:16]
        self._load(file, adapter_name, param)
        self._loaded[file.identity] = _Loaded(adapter_name, file)
        self.loads += 1
        return adapter_name

    def _evict(self, keep: set[tuple[str, int, int]]) -> None:
        """Unload least recently used adapters (not those the request needs) until one more fits."""
        for identity in list(self._loaded):
            if len(self._loaded) < self._catalog.options.cache_size:
                return
            if identity not in keep:
                self._pipeline.delete_adapters([self._loaded.pop(identity).adapter_name])

    def _load(self, file: LoraFile, adapter_name: str, param: str) -> None:
        try:
            import peft  # noqa: F401  (diffusers' LoRA backend)
        except ImportError:
            raise MissingExtra("lora", "LoRA adapters", "peft") from None
        pipeline = self._pipeline
        try:
            state = pipeline.lora_state_dict(str(file.path))
        except Exception as error:  # a file the loader cannot read: the client's choice of name, not a crash
            raise InvalidRequest(f"LoRA {file.name!r} cannot be read as a LoRA: {_short(error)}", param=param) from None
        state = state[0] if isinstance(state, tuple) else state
        check_fits(state, pipeline.transformer, file.name, self._model, param)
        try:
            with warnings.catch_warnings():  # several adapters in one model is the point here
                warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
                pipeline.load_lora_weights(str(file.path), adapter_name=adapter_name)
        except Exception as error:
            self._forget(adapter_name)
            raise InvalidRequest(f"LoRA {file.name!r} cannot be loaded: {_short(error)}", param=param) from None
        finally:
            self._enabled = True  # a newly loaded adapter is active until set_adapters/disable_lora

    def _forget(self, adapter_name: str) -> None:
        """Take out whatever a failed load left behind."""
        listed = {name for names in self._pipeline.get_list_adapters().values() for name in names}
        if adapter_name in listed:
            self._pipeline.delete_adapters([adapter_name])


def check_fits(state: dict[str, Any], transformer: Any, name: str, model: str, param: str) -> None:
    """Every ``transformer.*.lora_A/B`` tensor names a linear layer of ``transformer`` of its shape."""
    checked = 0
    for key, tensor in state.items():
        module_path, kind = _lora_target(key)
        if module_path is None:
            continue
        module = _linear(transformer, module_path)
        if module is None:
            raise InvalidRequest(
                f"LoRA {name!r} does not fit {model}: its weights are for a layer {module_path!r} the model lacks "
                "(an adapter for another model or family?)",
                param=param,
            )
        shape = tuple(tensor.shape)
        expected = module.in_features if kind == "A" else module.out_features
        if len(shape) != 2 or shape[1 if kind == "A" else 0] != expected:
            raise InvalidRequest(
                f"LoRA {name!r} does not fit {model}: {module_path} is {module.in_features}->{module.out_features} "
                f"in the model, the adapter's {kind} weight is {list(shape)} (an adapter for another size of model?)",
                param=param,
            )
        checked += 1
    if checked == 0:
        raise InvalidRequest(f"LoRA {name!r} holds no weights for {model}'s transformer", param=param)


def _lora_target(key: str) -> tuple[str | None, str]:
    if not key.startswith("transformer."):
        return None, ""
    for kind in ("A", "B"):
        suffix = f".lora_{kind}.weight"
        if key.endswith(suffix):
            return key.removeprefix("transformer.").removesuffix(suffix), kind
    return None, ""


def _linear(transformer: Any, path: str) -> Any:
    try:
        module = transformer.get_submodule(path)
    except AttributeError:
        return None
    module = getattr(module, "base_layer", module)  # a layer that already holds an adapter
    return module if hasattr(module, "in_features") and hasattr(module, "out_features") else None


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:300]
