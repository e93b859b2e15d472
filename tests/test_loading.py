"""Finding and loading weights: names, folders, repositories, and the errors when they are missing."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import threading
from pathlib import Path

import pytest
import torch

from fluxserve.engines.base import GenerationRequest
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions, import_diffusers, locate_model, pick_device, pick_dtype
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.engines.tiny import tiny_model_path
from fluxserve.errors import InvalidRequest, MissingExtra, ModelUnavailable, UnknownModel
from tests.helpers import TEST_TIMEOUT, png_bytes


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache with downloads off: no weights anywhere."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_known_model_without_weights_explains_where_it_looked_and_how_to_get_it(
    offline_hub: Path, cache_dir: Path
) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        locate_model("flux.2-klein-4b", EngineOptions(cache_dir=cache_dir))
    message = str(caught.value)
    assert "'flux.2-klein-4b'" in message
    assert "black-forest-labs/FLUX.2-klein-4B" in message
    assert str(offline_hub) in message
    assert "hf download black-forest-labs/FLUX.2-klein-4B" in message


def test_a_gated_model_also_says_to_accept_the_licence(offline_hub: Path, cache_dir: Path) -> None:
    with pytest.raises(
        ModelUnavailable, match=re.escape("accept its licence at https://huggingface.co/black-forest-labs/FLUX.2-dev")
    ):
        locate_model("flux.2-dev", EngineOptions(cache_dir=cache_dir, allow_download=False))


def test_a_repository_id_without_weights(offline_hub: Path, cache_dir: Path) -> None:
    with pytest.raises(ModelUnavailable, match="someone/some-flux"):
        locate_model("someone/some-flux", EngineOptions(cache_dir=cache_dir))


def test_unknown_names_list_the_known_ones(cache_dir: Path) -> None:
    with pytest.raises(UnknownModel, match=re.escape("flux.2-klein-4b, flux.2-klein-9b")) as caught:
        locate_model("flux-3000", EngineOptions(cache_dir=cache_dir))
    assert "tiny-random" in str(caught.value)


def test_a_local_folder_loads_like_real_weights(options: EngineOptions, tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    shutil.copytree(tiny_model_path("tiny-random", options.cache_dir), folder)
    engine = DiffusersEngine(str(folder), options)
    engine.load()
    assert engine.capabilities.family == "flux.2-klein"
    assert engine.capabilities.name == str(folder)
    from fluxserve.engines.base import GenerationRequest

    image = engine.generate(GenerationRequest("a tree", width=64, height=64, seed=3)).images[0].image
    assert image.size == (64, 64)


def test_a_folder_that_is_not_a_pipeline(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ModelUnavailable, match=re.escape("no model_index.json")):
        locate_model(str(tmp_path), EngineOptions(cache_dir=cache_dir))


def test_an_unsupported_pipeline_class(options: EngineOptions, tmp_path: Path) -> None:
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    engine = DiffusersEngine(str(folder), options)
    with pytest.raises(ModelUnavailable, match="StableDiffusionPipeline pipeline; fluxserve runs Flux2KleinPipeline"):
        engine.load()


def test_klein_base_is_told_apart_by_its_model_index(options: EngineOptions, tmp_path: Path) -> None:
    folder = tmp_path / "flipped"
    shutil.copytree(tiny_model_path("tiny-random", options.cache_dir), folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["is_distilled"] is True
    index["is_distilled"] = False
    (folder / "model_index.json").write_text(json.dumps(index))
    engine = DiffusersEngine(str(folder), options)
    engine.load()
    assert engine.capabilities.family == "flux.2-klein-base"
    assert engine.capabilities.guidance


def test_tiny_models_build_deterministically(tmp_path: Path, options: EngineOptions) -> None:
    first = tiny_model_path("tiny-random", tmp_path / "a")
    second = tiny_model_path("tiny-random", tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert any(p.suffix == ".safetensors" for p in files)
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    shared = tiny_model_path("tiny-random", options.cache_dir)
    assert (shared / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes() == (
        first / "transformer" / "diffusion_pytorch_model.safetensors"
    ).read_bytes()


def test_a_built_tiny_model_is_reused_not_rebuilt(options: EngineOptions) -> None:
    path = tiny_model_path("tiny-random", options.cache_dir)
    marker = path / "transformer" / "diffusion_pytorch_model.safetensors"
    stamp = marker.stat().st_mtime_ns
    assert tiny_model_path("tiny-random", options.cache_dir) == path
    assert marker.stat().st_mtime_ns == stamp


def test_device_and_dtype_choices() -> None:
    assert pick_device("cuda:1", torch) == "cuda:1"
    best = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device(None, torch) == best
    assert pick_dtype("cpu", None, torch) is torch.float32
    assert pick_dtype("cuda", None, torch) is torch.bfloat16
    assert pick_dtype("mps", None, torch) is torch.bfloat16
    assert pick_dtype("cuda", "float16", torch) is torch.float16
    with pytest.raises(InvalidRequest, match="bfloat16, float16, float32"):
        pick_dtype("cpu", "int8", torch)


def test_an_explicit_dtype_reaches_the_weights(options: EngineOptions) -> None:
    engine = DiffusersEngine(
        "tiny-random", EngineOptions(cache_dir=options.cache_dir, runtime=ModelRuntime(dtype="bfloat16"))
    )
    engine.load()
    assert engine._pipeline.transformer.dtype is torch.bfloat16
    from fluxserve.engines.base import GenerationRequest

    result = engine.generate(GenerationRequest("a tree", width=64, height=64, seed=3))
    assert png_bytes(result.images[0].image)


def test_offload_needs_a_gpu(options: EngineOptions) -> None:
    engine = DiffusersEngine(
        "tiny-random", EngineOptions(cache_dir=options.cache_dir, runtime=ModelRuntime(device="cpu", offload="model"))
    )
    with pytest.raises(InvalidRequest, match="CPU offload needs a GPU"):
        engine.load()


def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if it were not installed
    with pytest.raises(MissingExtra, match=r"pip install 'fluxserve\[diffusers\]'") as caught:
        import_diffusers()
    assert "diffusers is not installed" in str(caught.value)


def test_flux2_dev_weights_need_torchvision_for_their_tokenizer(
    options: EngineOptions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "dev-like"
    shutil.copytree(tiny_model_path("tiny-random-dev", options.cache_dir), folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "PixtralProcessor"]  # as in the real FLUX.2 [dev] repository
    (folder / "model_index.json").write_text(json.dumps(index))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else real_find_spec(name, *a)
    )
    with pytest.raises(MissingExtra, match=re.escape("pip install 'fluxserve[flux2-dev]'")) as caught:
        DiffusersEngine(str(folder), options).load()
    assert "torchvision is not installed" in str(caught.value)


def test_models_loaded_on_several_threads_at_once_all_load(
    options: EngineOptions, engines: dict[str, DiffusersEngine]
) -> None:
    """A server loads each model on its own worker thread: loads must not corrupt each other."""
    errors: list[BaseException] = []

    def load(engine: DiffusersEngine) -> None:
        try:
            engine.load()
        except BaseException as error:
            errors.append(error)

    for _ in range(3):
        fresh = [DiffusersEngine(name, options) for name in ("tiny-random-base", "tiny-random", "tiny-random-flux1")]
        threads = [threading.Thread(target=load, args=(engine,)) for engine in fresh]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TEST_TIMEOUT * 2)  # three models built at once
        assert errors == []
        for engine in fresh:
            request = GenerationRequest("a loaded model", width=64, height=64, seed=1)
            assert engine.generate(request).images[0].image.size == (64, 64)
