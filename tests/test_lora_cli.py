"""LoRA adapters from the command line: ``generate --lora NAME[:SCALE]`` and ``fluxserve loras``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fluxserve.cli.generate import parse_lora_flag
from fluxserve.cli.main import main
from fluxserve.engines.base import LoraChoice
from fluxserve.imaging.encode import read_parameters


def test_lora_flags_parse_name_and_scale() -> None:
    assert parse_lora_flag("style") == LoraChoice("style", 1.0)
    assert parse_lora_flag("people/alice:0.6") == LoraChoice("people/alice", 0.6)
    assert parse_lora_flag("org/repo:weights.safetensors") == LoraChoice("org/repo:weights.safetensors", 1.0)
    assert parse_lora_flag("org/repo:weights.safetensors:-1") == LoraChoice("org/repo:weights.safetensors", -1.0)


def test_generate_applies_loras_and_records_them(
    cache_dir: Path, lora_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--cache-dir", str(cache_dir), "--lora-dir", str(lora_dir), "--offline", "-m", "tiny-random"]
    common += ["--size", "256x256", "--seed", "4"]
    plain, styled = tmp_path / "plain.png", tmp_path / "styled.png"
    assert main(["generate", "a fox", *common, "-o", str(plain)]) == 0
    code = main(["generate", "a fox", *common, "--lora", "style:0.7", "--lora", "ink", "-o", str(styled)])
    assert code == 0, capsys.readouterr().err
    assert plain.read_bytes() != styled.read_bytes()
    parameters = read_parameters(styled.read_bytes())
    assert parameters is not None
    assert parameters["loras"] == [{"name": "style", "scale": 0.7}, {"name": "ink", "scale": 1.0}]
    capsys.readouterr()
    assert main(["generate", "a fox", *common, "--lora", "flux1-style", "-o", str(tmp_path / "x.png")]) != 0
    assert "FLUX.1 adapter" in capsys.readouterr().err


def test_loras_lists_the_folder(
    lora_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUXSERVE_LORA_DIR", str(lora_dir))
    assert main(["loras", "--json"]) == 0
    rows = {row["name"]: row["family"] for row in json.loads(capsys.readouterr().out)}
    assert rows["style"] == "flux.2"
    assert rows["flux1-style"] == "flux.1"
