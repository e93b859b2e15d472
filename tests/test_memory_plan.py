"""The memory plan: parameter counts from configs, estimates against measured peaks, the CLI, the refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fluxserve.cli.main import main
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.memory_check import shipped_configs
from fluxserve.engines.memory_plan import GB, estimate, plan_inputs
from fluxserve.engines.parameter_count import count_components
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.errors import ModelUnavailable
from tests.memory_support import build_midsize

MB = 1024**2
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-dev", "tiny-random-flux1"])
def test_meta_counts_equal_the_loaded_models(engines: dict[str, DiffusersEngine], cache_dir: Path, name: str) -> None:
    pipeline = engines[name]._pipeline
    folder = cache_dir / "tiny" / f"{name}-v1"
    counts = {c.name: c for c in count_components(folder)}
    assert set(counts) == {n for n in ("transformer", "text_encoder", "text_encoder_2", "vae") if hasattr(pipeline, n)}
    for component, count in counts.items():
        module = getattr(pipeline, component)
        assert count.parameters == sum(p.numel() for p in module.parameters()), component
        assert count.buffer_elements == sum(b.numel() for b in module.buffers()), component


# Published sizes (model cards): FLUX.2 [klein] 4B and 9B, FLUX.2 [dev] 32B with Mistral Small 3.1/3.2
# 24B, Qwen3-4B and Qwen3-8B, FLUX.1 12B with T5-XXL (4.7B encoder) and CLIP-L (123M).
PUBLISHED = {
    "flux.2-klein-4b": {"transformer": 4.0e9, "text_encoder": 4.0e9},
    "flux.2-klein-9b": {"transformer": 9.0e9, "text_encoder": 8.2e9},
    "flux.2-dev": {"transformer": 32e9, "text_encoder": 24e9},
    "flux.1-dev": {"transformer": 12e9, "text_encoder_2": 4.76e9, "text_encoder": 123e6},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_configs_have_the_published_sizes(name: str) -> None:
    folder = shipped_configs(name)
    assert folder is not None
    counts = {c.name: c.parameters for c in count_components(folder)}
    for component, published in PUBLISHED[name].items():
        assert counts[component] == pytest.approx(published, rel=0.05), component
    assert counts["vae"] == pytest.approx(84e6, rel=0.02)


def _measure(folder: str, size: int, warmup: str, cache_dir: Path) -> int:
    """Peak resident memory of generating one image, over the memory before loading (a fresh process)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TMPDIR": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.memory_probe", folder, str(size), str(size), warmup],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return int(figures["peak"] - figures["before"])


def _estimated(folder: Path, size: int) -> int:
    inputs = plan_inputs("test", folder, str(folder))
    *_, peak = estimate(inputs, ModelRuntime(), device="cpu", dtype="float32", width=size, height=size)
    return peak


TOLERANCE = 0.3
"""The estimate is within 30% of the measured peak (or 48 MB, for the tiny model's small figures)."""


@pytest.mark.slow
@pytest.mark.parametrize("size", [512, 1024])
def test_estimate_matches_the_measured_peak_of_the_tiny_model(cache_dir: Path, size: int) -> None:
    measured = _measure("tiny-random", size, "tiny-random-base", cache_dir)
    estimated = _estimated(cache_dir / "tiny" / "tiny-random-v1", size)
    assert abs(estimated - measured) <= max(TOLERANCE * measured, 48 * MB), (estimated / MB, measured / MB)


@pytest.mark.slow
def test_estimate_matches_the_measured_peak_of_a_mid_size_model(cache_dir: Path) -> None:
    folder = build_midsize(cache_dir / "midsize")
    measured = _measure(str(folder), 256, "tiny-random", cache_dir)
    estimated = _estimated(folder, 256)
    weights = sum(c.parameters for c in count_components(folder)) * 4
    assert measured > weights  # the weights are a real share of what is measured
    assert abs(estimated - measured) <= TOLERANCE * measured, (estimated / MB, measured / MB)


def test_plan_text_for_flux2_dev_on_a_24_gb_card(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "flux.2-dev", "--memory-gb", "24"]) == 0
    out = capsys.readouterr().out
    assert "published configs of black-forest-labs/FLUX.2-dev" in out
    assert "Mistral3ForConditionalGeneration" in out
    assert "Verdict: does not fit" in out
    assert "--quantize-transformer bnb-4bit --quantize-text-encoder bnb-4bit --offload model" in out


def test_plan_json_for_flux2_dev(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "flux.2-dev", "--memory-gb", "24", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["verdict"] == "does not fit"
    assert plan["peak_bytes"] > 80 * GB  # both models resident in bf16
    first = plan["alternatives"][0]
    assert (first["quantize_transformer"], first["quantize_text_encoder"], first["offload"]) == (
        "bnb-4bit",
        "bnb-4bit",
        "model",
    )
    assert first["peak_bytes"] < 24 * GB * 0.95


def test_plan_of_the_options_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "-m", "flux.2-dev", "--memory-gb", "24", "--json", "--offload", "model"]
    assert main([*args, "--quantize-transformer", "bnb-4bit", "--quantize-text-encoder", "bnb-4bit"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["verdict"] == "fits"
    assert {c["name"]: c["quantization"] for c in plan["components"]}["transformer"] == "bnb-4bit"


def test_klein_4b_fits_a_24_gb_card_as_is(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "flux.2-klein-4b", "--memory-gb", "24", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["verdict"] == "fits"
    assert plan["alternatives"][0]["flags"] == "(no quantization, nothing offloaded)"


def test_plan_rejects_a_bad_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "flux.2-dev", "--offload", "sometimes"]) == 2
    assert "--offload must be none, model or sequential" in capsys.readouterr().err


def test_a_model_over_its_budget_is_refused_at_load(cache_dir: Path) -> None:
    options = EngineOptions(cache_dir=cache_dir, allow_download=False, runtime=ModelRuntime(memory_gb=0.01))
    engine = DiffusersEngine("tiny-random", options)
    with pytest.raises(ModelUnavailable, match=r"not loading tiny-random .* needs about .*: does not fit"):
        engine.load()


def test_a_model_within_its_budget_loads(cache_dir: Path) -> None:
    options = EngineOptions(cache_dir=cache_dir, allow_download=False, runtime=ModelRuntime(memory_gb=4))
    engine = DiffusersEngine("tiny-random", options)
    engine.load()
    assert engine.family.key == "flux.2-klein"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--quantize-transformer", "gguf"], "--quantize-transformer gguf needs --gguf-file"),
        (["--memory-gb", "-1"], "--memory-gb: Input should be greater than 0"),
        (["--quantize-text-encoder", "gguf"], "--quantize-text-encoder must be none, bnb-8bit"),
    ],
)
def test_plan_checks_its_flags_as_generate_does(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--model", "flux.2-dev", *flags]) == 2
    assert message in capsys.readouterr().err
