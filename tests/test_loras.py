"""LoRA adapters: the catalog (names, files, families) and the engine's per-request switching."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxserve.engines.base import GenerationRequest, LoraChoice
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.loras import LoraCatalog, LoraOptions, detect_family
from fluxserve.errors import InvalidRequest
from tests.helpers import png_bytes


def lora_options(lora_dir: Path, **overrides: Any) -> LoraOptions:
    return LoraOptions(**{"directory": lora_dir, "cache_size": 2, **overrides})


@pytest.fixture(scope="module")
def lora_engine(options: EngineOptions, lora_dir: Path) -> Iterator[DiffusersEngine]:
    """Its own klein engine (the session's engines never see an adapter)."""
    engine = DiffusersEngine("tiny-random", EngineOptions(options.cache_dir, False, loras=lora_options(lora_dir)))
    engine.load()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def baseline(engines: dict[str, DiffusersEngine]) -> str:
    """The image of a klein pipeline that never loaded an adapter."""
    return digest(engines["tiny-random"])


def digest(engine: DiffusersEngine, *loras: LoraChoice, seed: int = 7) -> str:
    request = GenerationRequest("a lighthouse", width=256, height=256, seed=seed, loras=loras)
    result = engine.generate(request)
    return hashlib.sha256(png_bytes(result.images[0].image)).hexdigest()


# -- catalog ---------------------------------------------------------------------------------


def test_catalog_lists_adapters_with_their_family(lora_dir: Path) -> None:
    listed = {found.name: found.family for found in LoraCatalog(lora_options(lora_dir)).available()}
    assert listed == {
        "style": "flux.2",
        "ink": "flux.2",
        "more/third": "flux.2",
        "flux1-style": "flux.1",
        "misfit": None,
        "deeper": None,
    }


def test_family_comes_from_the_original_layouts_too() -> None:
    def kohya(width: int) -> dict[str, list[int]]:
        return {
            "lora_unet_single_blocks_0_linear1.lora_down.weight": [4, 64],
            "lora_unet_single_blocks_0_linear1.lora_up.weight": [width, 4],
        }

    assert detect_family(kohya(9 * 64)) == "flux.2"
    assert detect_family(kohya(7 * 64)) == "flux.1"
    assert detect_family({"lora_unet_double_blocks_0_img_mod_lin.lora_up.weight": [6, 4]}) == "flux.1"
    assert detect_family({"diffusion_model.double_stream_modulation_img.lin.lora_A.weight": [4, 8]}) == "flux.2"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("../style", "unknown LoRA"),
        ("/etc/passwd", "unknown LoRA"),
        ("nothing-here", "available: "),
        ("broken", "not a readable .safetensors file"),
        ("not-a-lora", "holds no LoRA weights"),
        ("", "1-300 characters"),
    ],
)
def test_catalog_refuses_names_it_cannot_serve(lora_dir: Path, name: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says) as raised:
        LoraCatalog(lora_options(lora_dir)).resolve(name, "loras[0].name")
    assert raised.value.param == "loras[0].name"


def test_a_symlink_out_of_lora_dir_is_refused(lora_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "loras"
    folder.mkdir()
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes((lora_dir / "style.safetensors").read_bytes())
    (folder / "escape.safetensors").symlink_to(outside)
    (folder / "inside.safetensors").symlink_to(folder / "escape.safetensors")
    catalog = LoraCatalog(LoraOptions(directory=folder))
    for name in ("escape", "inside"):
        with pytest.raises(InvalidRequest, match="points outside lora_dir"):
            catalog.resolve(name, "loras[0].name")
    assert catalog.available() == []


def test_a_repo_id_is_read_from_the_hub_cache_and_never_downloaded_when_downloads_are_off(
    lora_dir: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / "hub" / "models--someone--flux2-style" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "pytorch_lora_weights.safetensors").write_bytes((lora_dir / "style.safetensors").read_bytes())
    (snapshot / "other.safetensors").write_bytes((lora_dir / "ink.safetensors").read_bytes())
    (tmp_path / "hub" / "models--someone--flux2-style" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--flux2-style" / "refs" / "main").write_text("a" * 40)
    catalog = LoraCatalog(LoraOptions(directory=lora_dir, hub_cache_dir=tmp_path / "hub"))
    assert catalog.resolve("someone/flux2-style", "loras[0].name").family == "flux.2"
    assert catalog.resolve("someone/flux2-style:other.safetensors", "x").path.name == "other.safetensors"
    with pytest.raises(InvalidRequest, match="not in the Hugging Face cache and downloads are off") as raised:
        catalog.resolve("someone/not-cached", "loras[1].name")
    assert raised.value.param == "loras[1].name"


def test_catalog_checks_count_and_family(lora_dir: Path) -> None:
    catalog = LoraCatalog(lora_options(lora_dir, max_per_request=2))
    three = [LoraChoice("style"), LoraChoice("ink"), LoraChoice("more/third")]
    with pytest.raises(InvalidRequest, match="at most 2 per request") as raised:
        catalog.check(three, "flux.2", model="tiny-random")
    assert raised.value.param == "loras"
    with pytest.raises(InvalidRequest, match=r"FLUX\.1 adapter; tiny-random is a FLUX\.2 model") as raised:
        catalog.check([LoraChoice("style"), LoraChoice("flux1-style")], "flux.2", model="tiny-random")
    assert raised.value.param == "loras[1].name"
    with pytest.raises(InvalidRequest, match="takes no LoRA adapters"):
        catalog.check([LoraChoice("style")], None, model="cf:flux")


# -- engine ----------------------------------------------------------------------------------


def test_an_adapter_changes_the_image_and_without_one_it_is_byte_identical(
    lora_engine: DiffusersEngine, baseline: str
) -> None:
    never = baseline
    assert digest(lora_engine) == never
    styled = digest(lora_engine, LoraChoice("style", 1.0))
    assert styled != never
    assert digest(lora_engine) == never
    assert digest(lora_engine, LoraChoice("style", 0.0)) == never
    assert digest(lora_engine, LoraChoice("style", 1.0)) == styled
    assert digest(lora_engine, LoraChoice("style", 0.5)) not in (styled, never)


def test_two_adapters_combine(lora_engine: DiffusersEngine) -> None:
    style = digest(lora_engine, LoraChoice("style", 0.8))
    ink = digest(lora_engine, LoraChoice("ink", 0.8))
    both = digest(lora_engine, LoraChoice("style", 0.8), LoraChoice("ink", 0.8))
    assert len({style, ink, both}) == 3
    assert digest(lora_engine, LoraChoice("ink", 0.8), LoraChoice("style", 0.8)) == both


def test_the_lru_evicts_and_reloads_without_reloading_the_model(
    lora_engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = lora_engine._pipeline
    loaded_models: list[object] = []
    original = type(pipeline).from_pretrained.__func__

    def counted(cls: Any, *args: Any, **kwargs: Any) -> Any:
        loaded_models.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(type(pipeline), "from_pretrained", classmethod(counted))
    adapters = lora_engine.adapters
    first = digest(lora_engine, LoraChoice("style"))
    digest(lora_engine, LoraChoice("ink"))
    loads = adapters.loads
    assert adapters.resident == ["style", "ink"]
    digest(lora_engine, LoraChoice("more/third"))  # cache_size 2: style goes
    assert adapters.resident == ["ink", "more/third"]
    assert adapters.loads == loads + 1
    assert digest(lora_engine, LoraChoice("style")) == first  # loaded again, same image
    assert adapters.loads == loads + 2
    assert adapters.resident == ["more/third", "style"]
    digest(lora_engine, LoraChoice("style"))
    assert adapters.loads == loads + 2  # a hit
    assert loaded_models == []
    assert lora_engine._pipeline is pipeline


@pytest.mark.parametrize(
    ("choice", "param", "says"),
    [
        (LoraChoice("nothing-here"), "loras[0].name", "unknown LoRA"),
        (LoraChoice("flux1-style"), "loras[0].name", "FLUX.1 adapter"),
        (LoraChoice("broken"), "loras[0].name", "not a readable"),
        (LoraChoice("not-a-lora"), "loras[0].name", "no LoRA weights"),
        (LoraChoice("misfit"), "loras[0].name", "does not fit tiny-random"),
        (LoraChoice("deeper"), "loras[0].name", "a layer 'transformer_blocks.7.attn.to_q' the model lacks"),
        (LoraChoice("style", 2.5), "loras[0].scale", "from -2 to 2"),
        (LoraChoice("style", float("nan")), "loras[0].scale", "from -2 to 2"),
    ],
)
def test_refusals_name_the_field_and_the_engine_keeps_working(
    lora_engine: DiffusersEngine, baseline: str, choice: LoraChoice, param: str, says: str
) -> None:
    with pytest.raises(InvalidRequest, match=says) as raised:
        digest(lora_engine, choice)
    assert raised.value.param == param
    assert digest(lora_engine) == baseline


def test_too_many_adapters_is_refused(lora_engine: DiffusersEngine) -> None:
    four = [LoraChoice(name) for name in ("style", "ink", "more/third", "misfit")]
    with pytest.raises(InvalidRequest, match="at most 3 per request") as raised:
        digest(lora_engine, *four)
    assert raised.value.param == "loras"


def test_flux1_adapters_work_on_flux1(options: EngineOptions, lora_dir: Path, engines: dict[str, Any]) -> None:
    engine = DiffusersEngine("tiny-random-flux1", EngineOptions(options.cache_dir, False, loras=lora_options(lora_dir)))
    engine.load()
    never = digest(engines["tiny-random-flux1"])
    assert digest(engine, LoraChoice("flux1-style")) != never
    assert digest(engine) == never
    with pytest.raises(InvalidRequest, match=r"FLUX\.2 adapter; tiny-random-flux1 is a FLUX\.1 model"):
        digest(engine, LoraChoice("style"))
    engine.close()


def test_hosted_style_capabilities_refuse_loras(klein: DiffusersEngine) -> None:
    from dataclasses import replace

    from fluxserve.engines.validation import validate

    caps = replace(klein.capabilities, lora_family=None, name="cf:flux")
    with pytest.raises(InvalidRequest, match="cf:flux takes no LoRA adapters") as raised:
        validate(GenerationRequest("x", width=256, height=256, loras=(LoraChoice("style"),)), caps)
    assert raised.value.param == "loras"
