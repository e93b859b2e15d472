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

With ``compile`` on, adding, deleting or re-activating adapters changes the compiled graph, and
``set_adapters`` stores each scale as a Python float the graph specialises on: every switch would
compile again. :class:`SlotAdapters` uses diffusers' hot-swap instead (peft's
``hotswap_adapter``): a fixed number of slots (``max(lora_cache_size, max_loras_per_request)``)
whose LoRA weights are padded to one rank (``lora_hotswap_rank``) and whose scales are tensors.
A new adapter replaces the least recently used slot's weights in place
(``load_lora_weights(..., adapter_name=slot, hotswap=True)``); every filled slot stays active,
and a request's scales are written into the scale tensors (0 for slots it does not use). The
graph changes only when a slot is filled the first time and when adapters are first switched
off for a request without any; after that, switching compiles nothing.

Limits, from peft's hot-swap: an adapter can only go into a slot whose first adapter covered all
of its layers (fewer is fine: the rest are zeroed); an adapter above ``lora_hotswap_rank`` and
one that changes the text encoder (diffusers cannot hot-swap it) are refused with a 400. When no
free slot covers an adapter's layers, the least recently used slot is emptied and loaded afresh:
correct, but it compiles once more (logged).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fluxserve.engines.base import LoraChoice
from fluxserve.engines.loras import LoraCatalog, LoraFile
from fluxserve.errors import InvalidRequest, MissingExtra

log = logging.getLogger(__name__)


class Adapters(Protocol):
    """The LoRA adapters one loaded pipeline holds, switched per request."""

    loads: int
    """Adapter files loaded into the pipeline so far (each LRU miss is one)."""

    @property
    def resident(self) -> list[str]:
        """The names of the adapters loaded now, least recently used first."""
        ...

    def activate(self, choices: Sequence[LoraChoice]) -> bool:
        """Make exactly ``choices`` active; True if one changes the text encoder."""
        ...


def _requested(
    catalog: LoraCatalog, choices: Sequence[LoraChoice], family: str, model: str
) -> list[tuple[int, LoraChoice, LoraFile]]:
    """The choices that apply (scale 0 ones left out), each with its index in the request and its
    checked file; empty when none does."""
    wanted = [(index, choice) for index, choice in enumerate(choices) if choice.scale != 0]
    if not wanted:
        return []
    files = catalog.check([choice for _, choice in wanted], family, model=model)
    return [(index, choice, file) for (index, choice), file in zip(wanted, files, strict=True)]


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
        wanted = _requested(self._catalog, choices, self._family, self._model)
        if not wanted:
            self._disable()
            return False
        keep = {file.identity for _, _, file in wanted}
        active = sorted(  # by name: peft sums adapters in list order, so any order gives the same image
            (choice.name, self._ensure(file, f"loras[{index}].name", keep), choice.scale)
            for index, choice, file in wanted
        )
        self._pipeline.enable_lora()
        self._pipeline.set_adapters([name for _, name, _ in active], [scale for _, _, scale in active])
        self._enabled = True
        return any(file.text_encoder for _, _, file in wanted)

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
        pipeline = self._pipeline
        check_fits(read_state(pipeline, file, param), pipeline.transformer, file.name, self._model, param)
        try:
            load_weights(pipeline, file, adapter_name, param)
        finally:
            self._enabled = True  # a newly loaded adapter is active until set_adapters/disable_lora


@dataclass
class _Slot:
    """One hot-swap slot: a fixed adapter name whose weights are replaced in place."""

    adapter_name: str
    file: LoraFile | None = None
    targets: frozenset[str] = frozenset()
    """The transformer layers the slot's LoRA weights cover: those of the first adapter loaded into it."""
    base_scaling: dict[str, float] = field(default_factory=dict)
    """Per LoRA layer: its adapter's own ``alpha / rank`` (a request's scale multiplies it)."""
    used: int = 0
    """When a request last used it (a counter); the lowest is the least recently used."""


class SlotAdapters:
    """The adapters of a compiled pipeline: fixed slots, hot-swapped in place (see the module docstring).

    Not thread-safe: the engine calls it under its lock."""

    def __init__(self, pipeline: Any, catalog: LoraCatalog, family: str, model: str) -> None:
        self._pipeline = pipeline
        self._catalog = catalog
        self._family = family
        self._model = model
        options = catalog.options
        self.rank = options.hotswap_rank
        self._slots = [_Slot(f"slot_{index}") for index in range(max(options.cache_size, options.max_per_request))]
        self._clock = itertools.count(1)
        self._enabled = False
        self._scales: dict[str, float] | None = None
        """The scales last written into the slots' scale tensors (None: not since the last load)."""
        self.loads = 0
        """Adapter files loaded into the pipeline so far (each LRU miss is one)."""
        self.swaps = 0
        """Of those, the ones hot-swapped into a filled slot (no recompile)."""
        self.fresh_loads = 0
        """Of those, the ones loaded into an empty (or emptied) slot: the compiled graph changes."""

    @property
    def slots(self) -> int:
        return len(self._slots)

    @property
    def resident(self) -> list[str]:
        """The names of the adapters loaded now, least recently used first."""
        return [slot.file.name for slot in sorted(self._slots, key=lambda s: s.used) if slot.file is not None]

    def activate(self, choices: Sequence[LoraChoice]) -> bool:
        """Make exactly ``choices`` active (scale 0 ones left out). Never changes the text encoder."""
        wanted = _requested(self._catalog, choices, self._family, self._model)
        if not wanted:
            self._disable()
            return False
        keep = {file.identity for _, _, file in wanted}
        scales: dict[str, float] = {}
        for index, choice, file in wanted:
            slot = self._ensure(file, f"loras[{index}].name", keep)
            scales[slot.adapter_name] = choice.scale
        self._switch_on(scales)
        return False

    def _disable(self) -> None:
        if self._enabled and any(slot.file is not None for slot in self._slots):
            self._pipeline.disable_lora()
        self._enabled = False

    def _ensure(self, file: LoraFile, param: str, keep: set[tuple[str, int, int]]) -> _Slot:
        for slot in self._slots:
            if slot.file is not None and slot.file.identity == file.identity:
                slot.used = next(self._clock)
                return slot
        if file.text_encoder:
            raise InvalidRequest(
                f"LoRA {file.name!r} also changes the text encoder; with compile on, {self._model} hot-swaps "
                "transformer adapters only (diffusers cannot hot-swap a text encoder's): use a transformer-only "
                "adapter, or turn compile off for this model",
                param=param,
            )
        pipeline = self._pipeline
        state = read_state(pipeline, file, param)
        check_fits(state, pipeline.transformer, file.name, self._model, param)
        rank = max((int(t.shape[0]) for k, t in state.items() if k.endswith(".lora_A.weight")), default=0)
        if rank > self.rank:
            raise InvalidRequest(
                f"LoRA {file.name!r} has rank {rank}; with compile on, {self._model} hot-swaps adapters up to "
                f"rank {self.rank} (raise lora_hotswap_rank, or turn compile off for this model)",
                param=param,
            )
        targets = frozenset(path for path, _ in map(_lora_target, state) if path is not None)
        slot = self._place(file, param, keep, targets)
        slot.file, slot.used = file, next(self._clock)
        slot.base_scaling = self._base_scaling(slot.adapter_name, targets)
        self._scales = None
        self.loads += 1
        return slot

    def _place(self, file: LoraFile, param: str, keep: set[tuple[str, int, int]], targets: frozenset[str]) -> _Slot:
        """Load ``file`` into a slot: an empty one, else hot-swapped into the least recently used one
        that covers its layers, else loaded afresh into the least recently used one."""
        empty = next((slot for slot in self._slots if slot.file is None), None)
        if empty is not None:
            self._load_fresh(empty, file, param, targets)
            return empty
        free = sorted(
            (s for s in self._slots if s.file is not None and s.file.identity not in keep), key=lambda s: s.used
        )
        slot = free[0]  # there is one: a request names at most max_per_request adapters, and there are as many slots
        for candidate in free:
            if targets <= candidate.targets:
                try:
                    load_weights(self._pipeline, file, candidate.adapter_name, param, hotswap=True)
                except InvalidRequest as refused:  # peft refused (settings differ): nothing was swapped
                    log.warning("model %s: %s", self._model, refused)
                    slot = candidate
                    break
                self.swaps += 1
                return candidate
        log.warning(
            "model %s: LoRA %r cannot be hot-swapped into a slot (its layers or settings differ from the "
            "slots' adapters); %s is emptied and loaded afresh, so the compiled model compiles again",
            self._model,
            file.name,
            slot.adapter_name,
        )
        self._pipeline.delete_adapters([slot.adapter_name])
        slot.file, slot.targets, slot.base_scaling = None, frozenset(), {}
        self._load_fresh(slot, file, param, targets)
        return slot

    def _load_fresh(self, slot: _Slot, file: LoraFile, param: str, targets: frozenset[str]) -> None:
        """A first load into an empty slot, padded to the hot-swap rank with tensor scales."""
        # Before every first load (diffusers applies it once, to the next adapter it loads): pads all
        # slots to the rank and turns scales into tensors. The blocks are compiled one by one, so the
        # transformer itself never counts as compiled.
        self._pipeline.enable_lora_hotswap(target_rank=self.rank, check_compiled="ignore")
        load_weights(self._pipeline, file, slot.adapter_name, param)
        slot.targets = targets
        self.fresh_loads += 1
        self._enabled = True  # a newly loaded adapter is active (alone) until _switch_on

    def _switch_on(self, scales: dict[str, float]) -> None:
        filled = [slot.adapter_name for slot in self._slots if slot.file is not None]
        layers = list(self._layers())
        if any(module.active_adapters != filled for _, module in layers):
            for _, module in layers:
                module.set_adapter(filled)
        if not self._enabled:
            self._pipeline.enable_lora()
            self._enabled = True
        if scales == self._scales:
            return
        import torch

        with torch.no_grad():
            for slot in self._slots:
                if slot.file is None:
                    continue
                scale = scales.get(slot.adapter_name, 0.0)
                for name, module in layers:
                    if slot.adapter_name in module.scaling:
                        module.scaling[slot.adapter_name].fill_(scale * slot.base_scaling.get(name, 0.0))
        self._scales = dict(scales)

    def _base_scaling(self, adapter_name: str, targets: frozenset[str]) -> dict[str, float]:
        """Each layer's ``alpha / rank`` for the adapter just loaded into ``adapter_name``, as peft set it.

        A layer outside ``targets`` holds zeros for this adapter (peft zeroes what it lacks): 0."""
        return {
            name: float(module.scaling[adapter_name])
            for name, module in self._layers()
            if adapter_name in module.scaling and name in targets
        }

    def _layers(self) -> Iterator[tuple[str, Any]]:
        """The transformer's LoRA layers, by module path."""
        from peft.tuners.lora import LoraLayer

        for name, module in self._pipeline.transformer.named_modules():
            if isinstance(module, LoraLayer):
                yield name, module


def read_state(pipeline: Any, file: LoraFile, param: str) -> dict[str, Any]:
    """The adapter's tensors through the family's own ``lora_state_dict`` (peft needed)."""
    try:
        import peft  # noqa: F401  (diffusers' LoRA backend)
    except ImportError:
        raise MissingExtra("lora", "LoRA adapters", "peft") from None
    try:
        state = pipeline.lora_state_dict(str(file.path))
    except Exception as error:  # a file the loader cannot read: the client's choice of name, not a crash
        raise InvalidRequest(f"LoRA {file.name!r} cannot be read as a LoRA: {_short(error)}", param=param) from None
    return dict(state[0] if isinstance(state, tuple) else state)


def load_weights(pipeline: Any, file: LoraFile, adapter_name: str, param: str, *, hotswap: bool = False) -> None:
    """``load_lora_weights`` into ``adapter_name`` (in place with ``hotswap``); a failure is a 400."""
    try:
        with warnings.catch_warnings():  # several adapters in one model is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
            pipeline.load_lora_weights(str(file.path), adapter_name=adapter_name, hotswap=hotswap)
    except Exception as error:
        if not hotswap:
            _forget(pipeline, adapter_name)
        raise InvalidRequest(f"LoRA {file.name!r} cannot be loaded: {_short(error)}", param=param) from None


def _forget(pipeline: Any, adapter_name: str) -> None:
    """Take out whatever a failed load left behind."""
    listed = {name for names in pipeline.get_list_adapters().values() for name in names}
    if adapter_name in listed:
        pipeline.delete_adapters([adapter_name])


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
