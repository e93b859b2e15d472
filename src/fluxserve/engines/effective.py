"""Read how a loaded pipeline actually runs: what ``/v1/models`` reports as a model's runtime.

Everything here is read from the loaded modules, not from the settings that asked for it: the
dtype of the transformer's weights, the quantizer each component was loaded with, the step cache
and compiled blocks on the transformer, the attention backend its processors dispatch to, and
the bytes of parameters and buffers resident on the device.
"""

from __future__ import annotations

from typing import Any

from fluxserve.engines.quantize import quantization_of, text_encoder_name
from fluxserve.engines.runtime import EffectiveRuntime, ModelRuntime


def describe(
    pipeline: Any, device: str, runtime: ModelRuntime, memory_bytes: int, *, step_cache: bool
) -> EffectiveRuntime:
    """The runtime of ``pipeline`` loaded onto ``device`` as ``runtime`` asked. ``step_cache``: the
    engine sets the cache up on the transformer for each call (:class:`~fluxserve.engines.speed.Speedups`)."""
    transformer = pipeline.transformer
    return EffectiveRuntime(
        device=device,
        dtype=str(transformer.dtype).removeprefix("torch."),
        offload=runtime.offload,
        quantize_transformer=quantization_of(transformer),
        quantize_text_encoder=quantization_of(getattr(pipeline, text_encoder_name(pipeline), None)),
        step_cache=runtime.step_cache if step_cache else "none",
        compile=any(getattr(m, "_compiled_call_impl", None) is not None for m in transformer.modules()),
        attention=attention_backend(transformer),
        prompt_cache_mb=runtime.prompt_cache_mb,
        memory_bytes=memory_bytes,
    )


def attention_backend(transformer: Any) -> str:
    """The attention backend the transformer's processors dispatch to.

    A processor without one of its own uses diffusers' process-wide active backend (``native``
    unless ``DIFFUSERS_ATTN_BACKEND`` or a ``set_attention_backend`` call changed it).
    """
    chosen = {
        str(getattr(backend, "value", backend))
        for processor in getattr(transformer, "attn_processors", {}).values()
        if (backend := getattr(processor, "_attention_backend", None)) is not None
    }
    if chosen:
        return ",".join(sorted(chosen))
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active, _ = _AttentionBackendRegistry.get_active_backend()
    return str(getattr(active, "value", active))


def resident_bytes(pipeline: Any, device: str) -> int:
    """Bytes of the pipeline's parameters and buffers that live on ``device``.

    Quantized weights count what they store (torchao's wrapper tensors are opened up to their
    inner tensors; bitsandbytes and GGUF parameters hold their packed bytes already).
    """
    import torch

    wanted = torch.device(device)
    seen: set[int] = set()
    total = 0
    for component in pipeline.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in (*component.parameters(), *component.buffers()):
            if id(tensor) in seen or not _on(tensor.device, wanted):
                continue
            seen.add(id(tensor))
            total += tensor_bytes(tensor)
    return total


def tensor_bytes(tensor: Any) -> int:
    """The bytes a tensor stores, looking inside tensor subclasses that wrap others (torchao)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return int(tensor.numel() * tensor.element_size())


def _on(actual: Any, wanted: Any) -> bool:
    return bool(actual.type == wanted.type and (wanted.index is None or actual.index in (None, wanted.index)))
