"""An engine's effective runtime is read from the loaded pipeline, not copied from what was asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.effective import resident_bytes, tensor_bytes
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.quantize import quantization_of
from fluxserve.engines.registry import create_engine
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.engines.tiny import tiny_model_path


def _engine(cache_dir: Path, **runtime: object) -> DiffusersEngine:
    options = EngineOptions(cache_dir=cache_dir, allow_download=False, runtime=ModelRuntime(**runtime))  # type: ignore[arg-type]
    return DiffusersEngine("tiny-random", options)


def _all_bytes(pipeline: object) -> int:
    modules = [c for c in pipeline.components.values() if isinstance(c, torch.nn.Module)]  # type: ignore[attr-defined]
    return sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))


def test_the_runtime_is_known_once_loaded_with_the_memory_measured(cache_dir: Path) -> None:
    engine = _engine(cache_dir, device="cpu", prompt_cache_mb=8)
    assert engine.runtime is None
    engine.load()
    runtime = engine.runtime
    assert runtime is not None
    assert (runtime.device, runtime.dtype, runtime.offload, runtime.prompt_cache_mb) == ("cpu", "float32", "none", 8)
    assert runtime.memory_bytes == _all_bytes(engine._pipeline) > 0
    assert resident_bytes(engine._pipeline, "cuda") == 0  # nothing of it lives on another device


def test_the_step_cache_is_reported_where_the_engine_runs_one(cache_dir: Path) -> None:
    engine = _engine(cache_dir, step_cache="taylorseer")
    engine.load()
    runtime = engine.runtime
    assert runtime is not None
    assert runtime.step_cache == "taylorseer"
    without = _engine(cache_dir, step_cache="none")
    without.load()
    plain = without.runtime
    assert plain is not None
    assert plain.step_cache == "none"


# torch.compile's first import loads torch.jit helpers that warn about their own deprecation.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_blocks_and_the_attention_backend_are_read_from_the_transformer(cache_dir: Path) -> None:
    engine = _engine(cache_dir, attention="native")
    engine.load()
    before = engine.runtime
    assert before is not None
    assert (before.compile, before.attention) == (False, "native")
    engine._pipeline.transformer.compile_repeated_blocks()  # compiles lazily, on the first call: none here
    after = engine.runtime
    assert after is not None
    assert after.compile is True


def test_torchao_int8_weights_are_reported_and_counted_as_stored(cache_dir: Path) -> None:
    pytest.importorskip("torchao")
    from diffusers import Flux2Transformer2DModel, TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig

    folder = tiny_model_path("tiny-random", cache_dir) / "transformer"
    plain = Flux2Transformer2DModel.from_pretrained(folder, dtype=torch.bfloat16)
    quantized = Flux2Transformer2DModel.from_pretrained(
        folder, dtype=torch.bfloat16, quantization_config=TorchAoConfig(Int8WeightOnlyConfig())
    )
    assert (quantization_of(plain), quantization_of(quantized)) == ("none", "torchao-int8")
    plain_bytes = sum(tensor_bytes(p) for p in plain.parameters())
    quantized_bytes = sum(tensor_bytes(p) for p in quantized.parameters())
    assert quantized_bytes < 0.75 * plain_bytes  # int8 weights: about half of bfloat16's bytes


def test_a_hosted_engine_has_no_local_runtime(cache_dir: Path) -> None:
    engine = create_engine("cf:flux-2-klein-4b", EngineOptions(cache_dir=cache_dir), ProviderOptions())
    try:
        assert engine.runtime is None
    finally:
        engine.close()
