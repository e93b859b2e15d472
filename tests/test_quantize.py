"""Quantized transformers and text encoders: torchao, GGUF files, the disk cache and the refusals."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fluxserve.engines.base import GenerationRequest
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.quantize import (
    DeviceFacts,
    applied_quantization,
    check_quantization,
    quantized_cache_path,
    quantized_components,
)
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.engines.tiny import tiny_model_path
from fluxserve.errors import InvalidRequest, MissingExtra, ModelUnavailable
from tests.gguf_files import write_transformer_gguf

CPU = DeviceFacts("cpu")
ADA = DeviceFacts("cuda", (8, 9))
AMPERE = DeviceFacts("cuda", (8, 6))
HOPPER = DeviceFacts("cuda", (9, 0))
REQUEST = GenerationRequest("a lighthouse at dusk", width=64, height=64, seed=7)
CLOSE = 4.0
"""Mean pixel difference (0-255) under which a quantized model draws the unquantized one's picture.
Measured on the tiny klein model: int8 0.1, GGUF Q8_0 0.08, Q4_0 1.5; another seed: 36."""


@pytest.fixture(scope="module")
def klein_path(cache_dir: Path) -> Path:
    return tiny_model_path("tiny-random", cache_dir)


def load(path: Path, cache_dir: Path, **runtime: Any) -> DiffusersEngine:
    engine = DiffusersEngine(str(path), EngineOptions(cache_dir, allow_download=False, runtime=ModelRuntime(**runtime)))
    engine.load()
    return engine


def pixels(engine: DiffusersEngine) -> np.ndarray:
    return np.asarray(engine.generate(REQUEST).images[0].image, dtype=np.float64)


@pytest.fixture(scope="module")
def plain(klein_path: Path, tmp_path_factory: pytest.TempPathFactory) -> DiffusersEngine:
    return load(klein_path, tmp_path_factory.mktemp("plain"))


@pytest.fixture
def quantize_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of torchao's ``quantize_`` from diffusers or transformers (still doing the real work)."""
    import diffusers.quantizers.torchao.torchao_quantizer as diffusers_torchao
    import torchao.quantization

    calls: list[str] = []

    def counting(real: Callable[..., Any], caller: str) -> Callable[..., Any]:
        def quantize_(*args: Any, **kwargs: Any) -> Any:
            calls.append(caller)
            return real(*args, **kwargs)

        return quantize_

    monkeypatch.setattr(diffusers_torchao, "quantize_", counting(diffusers_torchao.quantize_, "diffusers"))
    monkeypatch.setattr(torchao.quantization, "quantize_", counting(torchao.quantization.quantize_, "transformers"))
    return calls


def test_torchao_int8_on_the_transformer_and_the_text_encoder_generates(
    klein_path: Path, plain: DiffusersEngine, tmp_path: Path
) -> None:
    engine = load(klein_path, tmp_path, quantize_transformer="torchao-int8", quantize_text_encoder="torchao-int8")
    applied = engine.quantization()
    assert applied["transformer"].method == applied["text_encoder"].method == "torchao-int8"
    assert applied["transformer"].detail == "Int8WeightOnlyConfig"
    assert applied["vae"].method == "none"
    for component in ("transformer", "text_encoder"):
        assert applied[component].weight_bytes < plain.quantization()[component].weight_bytes
    image = engine.generate(REQUEST).images[0].image
    assert image.size == (64, 64)
    difference = np.abs(np.asarray(image, dtype=np.float64) - pixels(plain))
    assert 0 < difference.mean() < CLOSE


def test_each_component_is_quantized_on_its_own(klein_path: Path, tmp_path: Path) -> None:
    engine = load(klein_path, tmp_path, quantize_text_encoder="torchao-int8")
    applied = engine.quantization()
    assert (applied["transformer"].method, applied["text_encoder"].method) == ("none", "torchao-int8")


def test_flux1_quantizes_its_t5_encoder_and_keeps_clip(cache_dir: Path, tmp_path: Path) -> None:
    engine = load(tiny_model_path("tiny-random-flux1", cache_dir), tmp_path, quantize_text_encoder="torchao-int8")
    applied = engine.quantization()
    assert (applied["text_encoder_2"].method, applied["text_encoder"].method) == ("torchao-int8", "none")


def test_a_quantized_component_is_saved_once_and_read_back(
    klein_path: Path, tmp_path: Path, quantize_calls: list[str]
) -> None:
    runtime = {"quantize_transformer": "torchao-int8", "quantize_text_encoder": "torchao-int8"}
    first = load(klein_path, tmp_path, **runtime)
    assert {"diffusers", "transformers"} <= set(quantize_calls)
    for component in ("transformer", "text_encoder"):
        saved = quantized_cache_path(tmp_path, klein_path, component, "torchao-int8")
        assert (saved / "config.json").is_file()
        assert list(saved.glob("*.safetensors"))  # torchao 0.16+ saves safetensors: no pickles
    quantize_calls.clear()

    second = load(klein_path, tmp_path, **runtime)
    assert quantize_calls == []
    weight = second._pipeline.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__name__ == "Int8Tensor"
    assert second.quantization() == first.quantization()
    assert np.array_equal(pixels(second), pixels(first))


def test_the_cache_key_follows_the_weights(klein_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "transformer").mkdir()
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"one")
    before = quantized_cache_path(tmp_path, folder, "transformer", "torchao-int8")
    assert before == quantized_cache_path(tmp_path, folder, "transformer", "torchao-int8")
    assert before != quantized_cache_path(tmp_path, folder, "transformer", "torchao-fp8")
    assert before != quantized_cache_path(tmp_path, folder, "text_encoder", "torchao-int8")
    os.utime(weights, ns=(0, 10**18))
    assert before != quantized_cache_path(tmp_path, folder, "transformer", "torchao-int8")


def test_torchao_fp8_weights_save_and_load_back(klein_path: Path, tmp_path: Path) -> None:
    """fp8 is refused at load on a CPU (no fp8 arithmetic), but its weights and cache work here."""
    import torch

    runtime = ModelRuntime(quantize_transformer="torchao-fp8")
    arguments: dict[str, Any] = {
        "dtype": torch.float32,
        "device": "cpu",
        "cache_dir": tmp_path,
        "allow_download": False,
    }
    quantized = quantized_components("tiny", klein_path, runtime, **arguments)["transformer"]
    assert (quantized_cache_path(tmp_path, klein_path, "transformer", "torchao-fp8") / "config.json").is_file()
    reread = quantized_components("tiny", klein_path, runtime, **arguments)["transformer"]
    weight = reread.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__name__ == "Float8Tensor"
    assert torch.equal(weight.dequantize(), quantized.transformer_blocks[0].attn.to_q.weight.dequantize())


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0"])
def test_a_gguf_transformer_loads_in_the_published_layout_and_generates(
    klein_path: Path, plain: DiffusersEngine, tmp_path: Path, kind: str
) -> None:
    gguf_file = tmp_path / f"flux-2-klein-tiny-{kind}.gguf"
    types = write_transformer_gguf(plain._pipeline.transformer, gguf_file, kind)
    assert "double_blocks.0.img_attn.qkv.weight" in types  # the original layout, converted at load
    assert {"F16", "F32", kind} == set(types.values())
    engine = load(
        klein_path,
        tmp_path,
        quantize_transformer="gguf",
        gguf_file=str(gguf_file),
        quantize_text_encoder="torchao-int8",
    )
    applied = engine.quantization()
    assert (applied["transformer"].method, applied["transformer"].detail) == ("gguf", kind)
    assert applied["text_encoder"].method == "torchao-int8"
    assert applied["transformer"].weight_bytes < plain.quantization()["transformer"].weight_bytes
    difference = np.abs(pixels(engine) - pixels(plain))
    assert 0 < difference.mean() < CLOSE


def test_nothing_quantized_reports_none(plain: DiffusersEngine) -> None:
    applied = applied_quantization(plain._pipeline)
    assert set(applied) == {"transformer", "text_encoder", "vae"}
    assert {quantization.method for quantization in applied.values()} == {"none"}


# Refusals: one clear error at load, naming the model, the option and what to use instead.


def refusal(runtime: ModelRuntime, device: DeviceFacts = CPU) -> str:
    with pytest.raises(InvalidRequest) as caught:
        check_quantization("flux.2-dev", runtime, device)
    message = str(caught.value)
    assert "'flux.2-dev'" in message
    return message


@pytest.mark.parametrize("method", ["bnb-8bit", "bnb-4bit"])
@pytest.mark.parametrize("option", ["quantize_transformer", "quantize_text_encoder"])
def test_bitsandbytes_without_cuda_is_refused(option: str, method: str) -> None:
    message = refusal(ModelRuntime(**{option: method}))
    assert f"{option} = '{method}'" in message
    assert "needs a CUDA GPU" in message
    assert "use torchao-int8 instead" in message
    assert check_quantization("flux.2-dev", ModelRuntime(**{option: method}), HOPPER) is None


def test_bitsandbytes_is_refused_at_load_on_this_machine(klein_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=re.escape("quantize_transformer = 'bnb-4bit' needs a CUDA GPU")):
        load(klein_path, tmp_path, quantize_transformer="bnb-4bit")
    assert not (tmp_path / "quantized").exists()


def test_fp8_needs_fp8_arithmetic() -> None:
    runtime = ModelRuntime(quantize_transformer="torchao-fp8")
    assert "runs on a CPU; use torchao-int8 instead" in refusal(runtime, CPU)
    assert "compute capability 8.6; use torchao-int8 instead" in refusal(runtime, AMPERE)
    assert "a mps device" in refusal(runtime, DeviceFacts("mps"))
    for device in (ADA, HOPPER):
        check_quantization("flux.2-dev", runtime, device)


def test_fp8_is_refused_at_load_on_a_cpu(klein_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=re.escape("quantize_text_encoder = 'torchao-fp8' needs fp8 arithmetic")):
        load(klein_path, tmp_path, quantize_text_encoder="torchao-fp8")


def test_gguf_is_for_the_transformer_only() -> None:
    message = refusal(ModelRuntime(quantize_text_encoder="gguf", gguf_file="x.gguf"))
    assert "quantize_text_encoder = 'gguf'" in message
    assert "torchao-int8, bnb-8bit or bnb-4bit" in message


def test_gguf_needs_its_file() -> None:
    with pytest.raises(InvalidRequest, match="needs gguf_file") as caught:
        check_quantization("flux.2-dev", ModelRuntime(quantize_transformer="gguf"), CPU)
    assert caught.value.param == "gguf_file"


@pytest.mark.parametrize(
    ("runtime", "instead"),
    [
        (ModelRuntime(quantize_transformer="gguf", gguf_file="x.gguf", offload="sequential"), "offload = 'model'"),
        (ModelRuntime(quantize_transformer="bnb-4bit", offload="sequential"), "offload = 'model'"),
    ],
)
def test_offload_that_the_quantization_cannot_do(runtime: ModelRuntime, instead: str) -> None:
    message = refusal(runtime, HOPPER)
    assert "cannot run with offload = 'sequential'" in message
    assert instead in message


@pytest.mark.parametrize(
    "runtime",
    [
        ModelRuntime(quantize_transformer="gguf", gguf_file="x.gguf", offload="model"),
        ModelRuntime(quantize_transformer="bnb-4bit", offload="model"),
        ModelRuntime(quantize_transformer="bnb-8bit", offload="sequential"),
        ModelRuntime(quantize_transformer="torchao-int8", offload="sequential"),
    ],
)
def test_offload_that_the_quantization_can_do(runtime: ModelRuntime) -> None:
    check_quantization("flux.2-dev", runtime, HOPPER)


@pytest.mark.parametrize(
    ("runtime", "library"),
    [
        (ModelRuntime(quantize_transformer="torchao-int8"), "torchao"),
        (ModelRuntime(quantize_text_encoder="torchao-fp8"), "torchao"),
        (ModelRuntime(quantize_transformer="bnb-4bit"), "bitsandbytes"),
        (ModelRuntime(quantize_transformer="gguf", gguf_file="x.gguf"), "gguf"),
    ],
)
def test_a_missing_library_names_the_extra(
    runtime: ModelRuntime, library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # as if it were not installed
    with pytest.raises(MissingExtra, match=re.escape("pip install 'fluxserve[quantization]'")) as caught:
        check_quantization("flux.2-dev", runtime, HOPPER)
    assert f"({library} is not installed)" in str(caught.value)
    assert "model 'flux.2-dev'" in str(caught.value)


def test_a_gguf_file_that_is_not_there(klein_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="is not a file"):
        load(klein_path, tmp_path, quantize_transformer="gguf", gguf_file=str(tmp_path / "missing.gguf"))


def test_a_gguf_file_on_the_hub_with_downloads_off(
    klein_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelUnavailable) as caught:
        load(klein_path, tmp_path, quantize_transformer="gguf", gguf_file="someone/FLUX.2-klein-GGUF/klein-Q4_0.gguf")
    message = str(caught.value)
    assert "downloads are off" in message
    assert "hf download someone/FLUX.2-klein-GGUF klein-Q4_0.gguf" in message
