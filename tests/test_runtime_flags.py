"""The runtime flags of ``generate`` and ``serve``, and ``fluxserve models --served``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fluxserve.cli import main as cli
from fluxserve.cli.generate import GenerateArgs
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.settings import Settings
from fluxserve.wiring import model_runtime

RUNTIME_FLAGS = [
    "--device",
    "cuda:1",
    "--dtype",
    "float16",
    "--offload",
    "model",
    "--quantize-transformer",
    "gguf",
    "--gguf-file",
    "/models/dev.gguf",
    "--quantize-text-encoder",
    "bnb-4bit",
    "--step-cache",
    "taylorseer",
    "--compile",
    "--attention",
    "flash",
    "--prompt-cache-mb",
    "16",
]
FLAGGED = ModelRuntime(
    device="cuda:1",
    dtype="float16",
    offload="model",
    quantize_transformer="gguf",
    gguf_file="/models/dev.gguf",
    quantize_text_encoder="bnb-4bit",
    step_cache="taylorseer",
    compile=True,
    attention="flash",
    prompt_cache_mb=16,
)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the commands hand to the library, instead of loading a model or starting a server."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "run_generate", lambda args: seen.setdefault("generate", args))
    monkeypatch.setattr(cli, "run_server", lambda settings: seen.setdefault("serve", settings))
    for name in ("FLUXSERVE_MODELS", "FLUXSERVE_RUNTIME", "FLUXSERVE_DEVICE", "FLUXSERVE_DTYPE"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_generate_runs_its_model_with_the_flags(captured: dict[str, Any]) -> None:
    assert cli.main(["generate", "a fox", "--model", "flux.2-dev", *RUNTIME_FLAGS]) == 0
    args: GenerateArgs = captured["generate"]
    assert args.runtime == FLAGGED


def test_generate_without_flags_takes_the_defaults(captured: dict[str, Any]) -> None:
    assert cli.main(["generate", "a fox"]) == 0
    assert captured["generate"].runtime == ModelRuntime()


def test_serve_flags_are_every_models_defaults_and_a_table_still_wins(captured: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "fluxserve.toml"
    config.write_text('[runtime.tiny-random-dev]\ndevice = "cpu"\ncompile = false\n')
    argv = ["serve", "-m", "tiny-random", "-m", "tiny-random-dev", "--config", str(config), *RUNTIME_FLAGS]
    assert cli.main(argv) == 0
    settings: Settings = captured["serve"]
    assert model_runtime(settings, "tiny-random") == FLAGGED
    assert model_runtime(settings, "tiny-random-dev") == ModelRuntime(
        **{**FLAGGED.__dict__, "device": "cpu", "compile": False}
    )


def test_serve_without_runtime_flags_keeps_the_configured_values(captured: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "fluxserve.toml"
    config.write_text('models = ["tiny-random"]\nstep_cache = "magcache"\ncompile = true\n')
    assert cli.main(["serve", "--config", str(config)]) == 0
    assert model_runtime(captured["serve"], "tiny-random") == ModelRuntime(step_cache="magcache", compile=True)


@pytest.mark.parametrize(
    ("command", "flags", "message"),
    [
        ("generate", ["--quantize-transformer", "int4"], "--quantize-transformer must be none, bnb-8bit, bnb-4bit, "),
        ("generate", ["--quantize-text-encoder", "gguf"], "--quantize-text-encoder must be none, bnb-8bit"),
        ("generate", ["--step-cache", "teacache"], "--step-cache must be none, first-block, taylorseer or magcache"),
        ("generate", ["--dtype", "fp8"], "--dtype must be bfloat16, float16 or float32, not 'fp8'"),
        ("generate", ["--prompt-cache-mb", "-1"], "--prompt-cache-mb: Input should be greater than or equal to 0"),
        ("generate", ["--attention", " "], "--attention: Value error, must not be empty"),
        ("generate", ["--quantize-transformer", "gguf"], "--quantize-transformer gguf needs --gguf-file"),
        ("generate", ["--gguf-file", "a.gguf"], "--gguf-file needs --quantize-transformer gguf"),
        ("serve", ["--offload", "disk"], "--offload must be none, model or sequential, not 'disk'"),
        ("serve", ["--gguf-file", "a.gguf"], "setting quantize_transformer: gguf_file needs quantize_transformer"),
    ],
)
def test_a_bad_runtime_flag_is_one_line_and_exit_2(
    captured: dict[str, Any], capsys: pytest.CaptureFixture[str], command: str, flags: list[str], message: str
) -> None:
    args = ["generate", "a fox"] if command == "generate" else ["serve", "-m", "tiny-random"]
    assert cli.main([*args, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"fluxserve: error: {message}")
    assert captured == {}


def test_generate_runs_a_tiny_model_in_bfloat16_end_to_end(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--dtype", "bfloat16", "--device", "cpu", "--no-compile", "--step-cache", "none", "--prompt-cache-mb", "0"]
    target = tmp_path / "fox.png"
    argv = [
        "generate",
        "a fox",
        "-m",
        "tiny-random",
        "--size",
        "64x64",
        "--cache-dir",
        str(cache_dir),
        "-o",
        str(target),
    ]
    assert cli.main([*argv, *flags]) == 0, capsys.readouterr().err
    assert target.stat().st_size > 0


def test_models_served_shows_each_configured_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fluxserve.toml"
    config.write_text(
        'models = ["flux.2-klein-4b", "flux.2-dev", "cf:flux-2-dev"]\nprompt_cache_mb = 64\n'
        '[runtime."flux.2-dev"]\ndevice = "cuda:1"\nquantize_transformer = "gguf"\ngguf_file = "/m/dev.gguf"\n'
    )
    assert cli.main(["models", "--config", str(config), "--json"]) == 0
    rows = {row["name"]: row["runtime"] for row in json.loads(capsys.readouterr().out)}
    assert rows["flux.2-klein-4b"] == {**ModelRuntime(prompt_cache_mb=64).__dict__}
    assert rows["flux.2-dev"] == {
        **ModelRuntime(
            device="cuda:1", quantize_transformer="gguf", gguf_file="/m/dev.gguf", prompt_cache_mb=64
        ).__dict__
    }
    assert rows["cf:flux-2-dev"] is None

    assert cli.main(["models", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "configured runtime" in table
    assert "gguf: /m/dev.gguf" in table
    assert "cuda:1" in table
    assert "hosted: the provider runs it" in table
