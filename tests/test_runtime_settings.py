"""Per-model runtime settings: server-wide defaults, a table per model (TOML or FLUXSERVE_RUNTIME), strict checks."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from fluxserve.engines.runtime import ModelRuntime
from fluxserve.errors import InvalidRequest
from fluxserve.settings import RUNTIME_FIELDS, Settings, load_settings
from fluxserve.wiring import model_runtime

CONFIG = """\
models = ["flux.2-klein-4b", "flux.2-dev"]
device = "cuda:0"
step_cache = "first-block"
prompt_cache_mb = 64

[runtime."flux.2-dev"]
device = "cuda:1"
offload = "model"
quantize_transformer = "gguf"
gguf_file = "/models/flux2-dev-Q4_K_M.gguf"
quantize_text_encoder = "bnb-4bit"
compile = true
attention = "flash"
"""


def test_the_settings_carry_every_field_of_a_model_runtime_with_the_same_defaults(tmp_path: Path) -> None:
    assert set(RUNTIME_FIELDS) == {field.name for field in fields(ModelRuntime)}
    assert model_runtime(Settings(data_dir=tmp_path), "flux.2-klein-4b") == ModelRuntime()


def test_a_model_table_in_the_toml_file_overrides_the_server_wide_values(tmp_path: Path) -> None:
    config = tmp_path / "fluxserve.toml"
    config.write_text(CONFIG)
    settings = load_settings(environ={}, config_file=config)
    assert model_runtime(settings, "flux.2-klein-4b") == ModelRuntime(
        device="cuda:0", step_cache="first-block", prompt_cache_mb=64
    )
    assert model_runtime(settings, "flux.2-dev") == ModelRuntime(
        device="cuda:1",
        offload="model",
        quantize_transformer="gguf",
        gguf_file="/models/flux2-dev-Q4_K_M.gguf",
        quantize_text_encoder="bnb-4bit",
        step_cache="first-block",  # not in its table: the server-wide value
        compile=True,
        attention="flash",
        prompt_cache_mb=64,
    )


def test_the_environment_gives_the_tables_as_json_and_replaces_the_files(tmp_path: Path) -> None:
    config = tmp_path / "fluxserve.toml"
    config.write_text(CONFIG)
    environ = {
        "FLUXSERVE_RUNTIME": json.dumps(
            {"flux.2-klein-4b": {"dtype": "float16", "quantize_transformer": "torchao-int8"}}
        ),
        "FLUXSERVE_COMPILE": "true",
        "FLUXSERVE_QUANTIZE_TEXT_ENCODER": "torchao-fp8",
    }
    settings = load_settings(environ=environ, config_file=config)
    assert model_runtime(settings, "flux.2-klein-4b") == ModelRuntime(
        device="cuda:0",
        dtype="float16",
        quantize_transformer="torchao-int8",
        quantize_text_encoder="torchao-fp8",
        step_cache="first-block",
        compile=True,
        prompt_cache_mb=64,
    )
    assert model_runtime(settings, "flux.2-dev") == ModelRuntime(
        device="cuda:0", quantize_text_encoder="torchao-fp8", step_cache="first-block", compile=True, prompt_cache_mb=64
    )


def test_flags_set_the_server_wide_values_and_a_models_table_still_wins(tmp_path: Path) -> None:
    config = tmp_path / "fluxserve.toml"
    config.write_text(CONFIG)
    settings = load_settings({"device": "cuda:2", "dtype": "float16"}, environ={}, config_file=config)
    assert (model_runtime(settings, "flux.2-klein-4b").device, model_runtime(settings, "flux.2-dev").device) == (
        "cuda:2",
        "cuda:1",
    )
    assert model_runtime(settings, "flux.2-dev").dtype == "float16"


@pytest.mark.parametrize(
    ("runtime", "field", "message"),
    [
        ({"flux.2-dev": {"dtype": "float8"}}, "runtime.flux.2-dev.dtype", "'bfloat16', 'float16' or 'float32'"),
        ({"flux.2-dev": {"quantize_transformer": "int4"}}, "runtime.flux.2-dev.quantize_transformer", "'bnb-4bit'"),
        ({"flux.2-dev": {"offlaod": "model"}}, "runtime.flux.2-dev.offlaod", "Extra inputs are not permitted"),
        ({"flux.2-dev": {"prompt_cache_mb": -1}}, "runtime.flux.2-dev.prompt_cache_mb", "greater than or equal to 0"),
        ({"flux.2-dev": {"step_cache": "teacache"}}, "runtime.flux.2-dev.step_cache", "'first-block'"),
        ({"flux.2-dev": {"compile": "sometimes"}}, "runtime.flux.2-dev.compile", "valid boolean"),
        ({"flux.2-dev": {"attention": ""}}, "runtime.flux.2-dev.attention", "must not be empty"),
        (
            {"flux.2-dev": {"quantize_text_encoder": "gguf"}},
            "runtime.flux.2-dev.quantize_text_encoder",
            "gguf files are for the transformer only",
        ),
        ({"flux.2-dev": {"quantize_transformer": "gguf"}}, "runtime.flux.2-dev.gguf_file", "needs a gguf_file"),
        (
            {"flux.2-dev": {"gguf_file": "a.gguf"}},
            "runtime.flux.2-dev.quantize_transformer",
            "needs quantize_transformer",
        ),
        ({"flux.1-dev": {"offload": "model"}}, "runtime.flux.1-dev", "'flux.1-dev' is not served"),
        ({"flux.2-dev": "model"}, "runtime.flux.2-dev", "valid dictionary"),
    ],
)
def test_a_bad_table_names_the_model_and_field(
    tmp_path: Path, runtime: dict[str, object], field: str, message: str
) -> None:
    config = tmp_path / "fluxserve.toml"
    config.write_text('models = ["flux.2-dev"]\n')
    with pytest.raises(InvalidRequest) as raised:
        load_settings(environ={"FLUXSERVE_RUNTIME": json.dumps(runtime)}, config_file=config)
    assert str(raised.value).startswith(f"setting {field}: ")
    assert message in str(raised.value)
    assert raised.value.param == field


def test_a_bad_value_in_a_toml_table_names_it(tmp_path: Path) -> None:
    config = tmp_path / "fluxserve.toml"
    config.write_text('models = ["tiny-random"]\n[runtime.tiny-random]\noffload = "disk"\n')
    with pytest.raises(InvalidRequest, match=r"^setting runtime\.tiny-random\.offload: Input should be 'none'"):
        load_settings(environ={}, config_file=config)


@pytest.mark.parametrize(
    ("environ", "field", "message"),
    [
        ({"FLUXSERVE_RUNTIME": "{not json"}, "runtime", "not JSON"),
        ({"FLUXSERVE_RUNTIME": "[1]"}, "runtime", "valid dictionary"),
        ({"FLUXSERVE_QUANTIZE_TRANSFORMER": "gguf"}, "gguf_file", "needs a gguf_file (model flux.2-klein-4b)"),
        ({"FLUXSERVE_GGUF_FILE": "x.gguf"}, "quantize_transformer", "needs quantize_transformer = gguf"),
        ({"FLUXSERVE_DTYPE": "fp16"}, "dtype", "'float16'"),
        ({"FLUXSERVE_PROMPT_CACHE_MB": "lots"}, "prompt_cache_mb", "valid number"),
    ],
)
def test_bad_server_wide_values_name_the_setting(environ: dict[str, str], field: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        load_settings(environ=environ)
    assert str(raised.value).startswith(f"setting {field}: ")
    assert message in str(raised.value)


def test_a_gguf_file_may_come_from_the_server_wide_value_for_the_one_model_that_uses_it(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "FLUXSERVE_MODELS": "flux.2-dev",
            "FLUXSERVE_GGUF_FILE": "/models/dev.gguf",
            "FLUXSERVE_RUNTIME": json.dumps({"flux.2-dev": {"quantize_transformer": "gguf"}}),
        }
    )
    runtime = model_runtime(settings, "flux.2-dev")
    assert (runtime.quantize_transformer, runtime.gguf_file) == ("gguf", "/models/dev.gguf")
