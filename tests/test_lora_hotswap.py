"""LoRA hot-swap for compiled models (engines/adapters.py, SlotAdapters).

Most tests run the slots on an uncompiled tiny klein pipeline: hot-swap itself (peft replacing
an adapter's weights in place, scales as tensors, ranks padded) does not need compile, and each
test gets a fresh pipeline because hot-swap changes its LoRA layers for good. The last test
compiles (inductor on the CPU: a minute or two on two cores) and counts the graphs dynamo
compiles: once the slots are filled, switching adapters compiles nothing.

Tolerance where images are compared with an adapter loaded the ordinary way: the slots pad the
LoRA matrices with zeros to the hot-swap rank and keep scales as tensors, which can reorder float
sums; measured differences are below 1e-6 on the 0-1 scale. 1e-5 is ten times that and 390 times
below one 8-bit level.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fluxserve.engines.adapters import SlotAdapters
from fluxserve.engines.base import GenerationRequest, LoraChoice
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions, import_diffusers
from fluxserve.engines.loras import LoraCatalog, LoraOptions
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.engines.tiny import tiny_model_path
from fluxserve.errors import InvalidRequest
from tests.lora_files import TARGETS, make_lora

RANK = 8
"""The tests' hot-swap rank: style and ink are rank 4, strong is 8, huge is 16."""
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def hotswap_dir(tmp_path_factory: pytest.TempPathFactory, lora_dir: Path, cache_dir: Path) -> Path:
    """style and ink (rank 4), strong (rank 8, alpha 16), narrow (two layers), broad (more layers
    than style), huge (rank 16), deeper (a layer the model lacks), and for FLUX.1 one that adapts
    the text encoder too."""
    folder = tmp_path_factory.mktemp("hotswap-loras")
    for name in ("style", "ink", "deeper"):
        shutil.copy(lora_dir / f"{name}.safetensors", folder)
    klein = TARGETS["Flux2KleinPipeline"]
    make_lora("tiny-random", cache_dir, folder / "strong.safetensors", seed=11, rank=8, alpha=16)
    make_lora("tiny-random", cache_dir, folder / "narrow.safetensors", seed=12, targets=["to_q", "to_k"])
    make_lora("tiny-random", cache_dir, folder / "broad.safetensors", seed=13, targets=[*klein, "linear_in"])
    make_lora("tiny-random", cache_dir, folder / "huge.safetensors", seed=14, rank=16)
    make_lora("tiny-random-flux1", cache_dir, folder / "flux1-te.safetensors", seed=15, text_encoder=True)
    return folder


def fresh_pipeline(cache_dir: Path, model: str = "tiny-random") -> Any:
    _, diffusers = import_diffusers()
    name = "FluxPipeline" if model == "tiny-random-flux1" else "Flux2KleinPipeline"
    pipeline = getattr(diffusers, name).from_pretrained(tiny_model_path(model, cache_dir))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def slots_on(pipeline: Any, folder: Path, model: str = "tiny-random", cache_size: int = 2) -> SlotAdapters:
    options = LoraOptions(directory=folder, cache_size=cache_size, max_per_request=2, hotswap_rank=RANK)
    family = "flux.1" if model == "tiny-random-flux1" else "flux.2"
    return SlotAdapters(pipeline, LoraCatalog(options), family, model)


def image(pipeline: Any) -> np.ndarray:
    result = pipeline(
        prompt="a lighthouse",
        width=64,
        height=64,
        num_inference_steps=4,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(7),
        output_type="np",
    )
    return np.asarray(result.images[0])


def loaded_the_ordinary_way(cache_dir: Path, folder: Path, *choices: tuple[str, float]) -> np.ndarray:
    """The image with ``choices`` loaded into a fresh pipeline by load_lora_weights and set_adapters."""
    pipeline = fresh_pipeline(cache_dir)
    for name, _ in choices:
        with warnings.catch_warnings():  # a second adapter in one model is what this does
            warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
            pipeline.load_lora_weights(str(folder / f"{name}.safetensors"), adapter_name=name)
    pipeline.set_adapters([name for name, _ in choices], [scale for _, scale in choices])
    return image(pipeline)


@pytest.fixture
def pipeline(cache_dir: Path) -> Any:
    return fresh_pipeline(cache_dir)


def lora_tensors(pipeline: Any) -> dict[str, int]:
    """Each LoRA weight of the transformer, by name, and where its storage is."""
    return {name: t.data_ptr() for name, t in pipeline.transformer.named_parameters() if "lora_" in name}


def test_an_adapter_swapped_in_gives_its_own_image(pipeline: Any, hotswap_dir: Path, cache_dir: Path) -> None:
    """After style and ink fill both slots, strong (another rank and alpha) and narrow (fewer layers)
    replace them in place: each image is the one the adapter gives when loaded the ordinary way."""
    slots = slots_on(pipeline, hotswap_dir)
    slots.activate([LoraChoice("style")])
    slots.activate([LoraChoice("ink")])
    before = lora_tensors(pipeline)
    for name, scale in [("strong", 1.0), ("narrow", 0.5), ("ink", -0.7), ("strong", 0.3)]:
        slots.activate([LoraChoice(name, scale)])
        expected = loaded_the_ordinary_way(cache_dir, hotswap_dir, (name, scale))
        assert np.abs(image(pipeline) - expected).max() < TOLERANCE, name
    assert lora_tensors(pipeline) == before  # the same tensors, overwritten in place
    assert sorted({n for names in pipeline.get_list_adapters().values() for n in names}) == ["slot_0", "slot_1"]
    assert (slots.fresh_loads, slots.swaps) == (2, 4)  # two slots: each of the four replaced the older one


def test_two_adapters_combine_and_none_is_byte_identical(pipeline: Any, hotswap_dir: Path, cache_dir: Path) -> None:
    never = image(pipeline)
    slots = slots_on(pipeline, hotswap_dir)
    slots.activate([LoraChoice("style", 0.8), LoraChoice("ink", 0.6)])
    both = loaded_the_ordinary_way(cache_dir, hotswap_dir, ("style", 0.8), ("ink", 0.6))
    assert np.abs(image(pipeline) - both).max() < TOLERANCE
    slots.activate([LoraChoice("strong", 1.0), LoraChoice("ink", 0.6)])  # strong replaces style
    expected = loaded_the_ordinary_way(cache_dir, hotswap_dir, ("strong", 1.0), ("ink", 0.6))
    assert np.abs(image(pipeline) - expected).max() < TOLERANCE
    slots.activate([])
    assert image(pipeline).tobytes() == never.tobytes()
    slots.activate([LoraChoice("ink", 0.0)])  # scale 0 is no adapter
    assert image(pipeline).tobytes() == never.tobytes()


def test_the_least_recently_used_slot_is_the_one_replaced(pipeline: Any, hotswap_dir: Path) -> None:
    slots = slots_on(pipeline, hotswap_dir)
    assert slots.slots == 2
    slots.activate([LoraChoice("style")])
    slots.activate([LoraChoice("ink")])
    assert slots.resident == ["style", "ink"]
    slots.activate([LoraChoice("style")])  # a hit: ink is now the least recently used
    assert slots.resident == ["ink", "style"]
    assert slots.loads == 2
    slots.activate([LoraChoice("strong")])
    assert slots.resident == ["style", "strong"]
    slots.activate([LoraChoice("style"), LoraChoice("narrow")])  # style is needed: strong's slot takes narrow
    assert slots.resident == ["style", "narrow"] or slots.resident == ["narrow", "style"]
    assert "strong" not in slots.resident
    assert (slots.loads, slots.swaps, slots.fresh_loads) == (4, 2, 2)


def test_an_adapter_on_layers_no_slot_covers_is_loaded_afresh(
    pipeline: Any, hotswap_dir: Path, cache_dir: Path
) -> None:
    """broad adapts layers style and ink do not: peft cannot swap it in, so a slot is emptied and
    loaded again (correct, but a compiled model compiles once more)."""
    slots = slots_on(pipeline, hotswap_dir)
    slots.activate([LoraChoice("style")])
    slots.activate([LoraChoice("ink")])
    slots.activate([LoraChoice("broad", 0.9)])
    assert (slots.fresh_loads, slots.swaps) == (3, 0)
    assert slots.resident == ["ink", "broad"]
    expected = loaded_the_ordinary_way(cache_dir, hotswap_dir, ("broad", 0.9))
    assert np.abs(image(pipeline) - expected).max() < TOLERANCE
    slots.activate([LoraChoice("narrow")])  # broad's slot covers narrow's layers: swapped in
    assert slots.swaps == 1


def test_refusals_name_the_adapter_and_leave_the_slots_working(
    pipeline: Any, hotswap_dir: Path, cache_dir: Path
) -> None:
    slots = slots_on(pipeline, hotswap_dir)
    slots.activate([LoraChoice("style")])
    with_style = image(pipeline)
    with pytest.raises(InvalidRequest, match=r"has rank 16; with compile on, .* up to rank 8") as rank:
        slots.activate([LoraChoice("huge")])
    assert rank.value.param == "loras[0].name"
    with pytest.raises(InvalidRequest, match="the model lacks") as misfit:
        slots.activate([LoraChoice("style"), LoraChoice("deeper")])
    assert misfit.value.param == "loras[1].name"
    slots.activate([LoraChoice("style")])
    assert image(pipeline).tobytes() == with_style.tobytes()
    flux1 = slots_on(fresh_pipeline(cache_dir, "tiny-random-flux1"), hotswap_dir, "tiny-random-flux1")
    with pytest.raises(InvalidRequest, match="also changes the text encoder") as encoder:
        flux1.activate([LoraChoice("flux1-te")])
    assert encoder.value.param == "loras[0].name"


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # raised inside inductor
def test_with_compile_switching_adapters_compiles_nothing(
    options: EngineOptions, hotswap_dir: Path, engines: dict[str, DiffusersEngine]
) -> None:
    """A compiled engine: filling each slot and the first request without adapters compile (new
    graphs); from then on, swapping adapters in and out, changing scales and going without adapters
    add no graph. Counted with dynamo's own counter of the graphs it compiled."""
    from torch._dynamo.utils import counters

    loras = LoraOptions(directory=hotswap_dir, cache_size=2, max_per_request=2, hotswap_rank=RANK)
    engine = DiffusersEngine(
        "tiny-random", EngineOptions(options.cache_dir, False, runtime=ModelRuntime(compile=True), loras=loras)
    )
    engine.load()  # compiles the blocks at 256x256
    compiled_at_load = counters["stats"]["unique_graphs"]
    adapters = engine.adapters
    assert isinstance(adapters, SlotAdapters)

    def run(*choices: LoraChoice) -> np.ndarray:
        request = GenerationRequest("a lighthouse", width=256, height=256, seed=7, loras=choices)
        return np.asarray(engine.generate(request).images[0].image, dtype=np.int16)

    def eager(*choices: LoraChoice) -> np.ndarray:
        request = GenerationRequest("a lighthouse", width=256, height=256, seed=7, loras=choices)
        return np.asarray(plain.generate(request).images[0].image, dtype=np.int16)

    plain = DiffusersEngine("tiny-random", EngineOptions(options.cache_dir, False, loras=loras))
    plain.load()
    run(LoraChoice("style"))  # fills slot 0
    run(LoraChoice("ink"))  # fills slot 1
    run()  # adapters off
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > compiled_at_load  # the counter sees what changes the graph
    for choices in [
        (LoraChoice("strong"),),  # swapped into style's slot
        (LoraChoice("style", 0.5), LoraChoice("strong")),  # style back in place of ink
        (),
        (LoraChoice("narrow", -1.0),),
        (LoraChoice("ink", 0.8), LoraChoice("narrow", 0.2)),
    ]:
        out = run(*choices)
        assert np.abs(out - eager(*choices)).max() <= 1, choices  # fused kernels: one 8-bit level at most
    assert counters["stats"]["unique_graphs"] == graphs
    assert adapters.swaps >= 4
    assert adapters.fresh_loads == 2
    engine.close()
    plain.close()


def test_the_hotswap_rank_is_a_setting() -> None:
    import pydantic

    from fluxserve.settings import Settings
    from fluxserve.wiring import lora_options

    assert lora_options(Settings()).hotswap_rank == 64
    assert lora_options(Settings(lora_hotswap_rank=32)).hotswap_rank == 32
    with pytest.raises(pydantic.ValidationError, match="lora_hotswap_rank"):
        Settings(lora_hotswap_rank=0)
