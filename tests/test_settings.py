"""Server settings: flags over environment over config file over defaults, one object."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxserve.cli.main import main
from fluxserve.defaults import DEFAULT_MODEL
from fluxserve.errors import InvalidRequest
from fluxserve.settings import load_settings


def test_defaults_serve_klein_on_loopback() -> None:
    settings = load_settings(environ={})
    assert settings.models == [DEFAULT_MODEL] == ["flux.2-klein-4b"]
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_precedence_flags_then_environment_then_file(tmp_path: Path) -> None:
    config = tmp_path / "fluxserve.toml"
    config.write_text('models = ["tiny-random"]\nport = 9000\nmax_queue = 3\nhost = "0.0.0.0"\n')
    environ = {"FLUXSERVE_PORT": "9100", "FLUXSERVE_MODELS": "tiny-random, tiny-random-dev"}
    settings = load_settings({"port": 9200, "host": None}, environ=environ, config_file=config)
    assert settings.port == 9200  # flag
    assert settings.models == ["tiny-random", "tiny-random-dev"]  # environment
    assert settings.max_queue == 3  # file
    assert settings.host == "0.0.0.0"  # file; a flag left unset does not override
    assert settings.max_uploads == 10  # default


@pytest.mark.parametrize(
    ("environ", "param"),
    [
        ({"FLUXSERVE_PORT": "eighty"}, "port"),
        ({"FLUXSERVE_MAX_QUEUE": "0"}, "max_queue"),
        ({"FLUXSERVE_MODELS": "a,a"}, "models"),
        ({"FLUXSERVE_OFFLOAD": "gpu"}, "offload"),
    ],
)
def test_a_bad_value_names_the_setting(environ: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        load_settings(environ=environ)
    assert raised.value.param == param


def test_an_unknown_key_in_the_config_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(InvalidRequest, match="prot"):
        load_settings(environ={}, config_file=config)


def test_serve_with_a_bad_setting_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "tiny-random", "--port", "70000"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fluxserve: error: setting port")
    assert len(error.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("environ", "param"),
    [
        ({"FLUXSERVE_OBJECT_STORE_URL": "bucket-without-scheme"}, "object_store_url"),
        ({"FLUXSERVE_OBJECT_STORE_URL": "s3://Upper_Case"}, "object_store_url"),
        ({"FLUXSERVE_OBJECT_STORE_URL": "gs://images"}, "object_store_url"),
        ({"FLUXSERVE_OBJECT_STORE_ENDPOINT_URL": "127.0.0.1:9000"}, "object_store_endpoint_url"),
        ({"FLUXSERVE_OBJECT_STORE_ACCESS_KEY_ID": "id-without-its-secret"}, "object_store_secret_access_key"),
        ({"FLUXSERVE_OBJECT_STORE_TIMEOUT_SECONDS": "0"}, "object_store_timeout_seconds"),
    ],
)
def test_a_bad_object_store_setting_names_itself(environ: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        load_settings(environ=environ)
    assert raised.value.param == param


def test_object_store_settings_from_the_environment() -> None:
    environ = {
        "FLUXSERVE_OBJECT_STORE_URL": "s3://team-images/fluxserve",
        "FLUXSERVE_OBJECT_STORE_ENDPOINT_URL": "http://127.0.0.1:9000",
        "FLUXSERVE_OBJECT_STORE_REGION": "eu-west-1",
    }
    settings = load_settings(environ=environ)
    assert settings.object_store_url == "s3://team-images/fluxserve"
    assert settings.object_store_endpoint_url == "http://127.0.0.1:9000"
    assert settings.object_store_region == "eu-west-1"
    assert load_settings(environ={}).object_store_url is None  # the data directory keeps the images
