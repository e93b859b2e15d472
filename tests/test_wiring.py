"""Settings to engine options: the region picks BFL's host, URLs lose a trailing slash, defaults agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.settings import Settings
from fluxserve.storage.files import BucketOptions
from fluxserve.wiring import bucket_options, engine_options, engine_options_per_model, provider_options


def test_default_settings_give_the_default_provider_options(tmp_path: Path) -> None:
    assert provider_options(Settings(data_dir=tmp_path)) == ProviderOptions()


@pytest.mark.parametrize(
    ("region", "url"),
    [("global", "https://api.bfl.ai"), ("eu", "https://api.eu.bfl.ai"), ("us", "https://api.us.bfl.ai")],
)
def test_the_bfl_region_picks_the_host(tmp_path: Path, region: str, url: str) -> None:
    assert provider_options(Settings(data_dir=tmp_path, bfl_region=region)).bfl_base_url == url


def test_base_urls_given_win_over_the_region_and_lose_a_trailing_slash(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        bfl_region="eu",
        bfl_base_url="http://127.0.0.1:9000/bfl/",
        cloudflare_base_url="http://127.0.0.1:9001/client/v4/",
        cloudflare_concurrency=2,
        bfl_concurrency=3,
        provider_timeout_seconds=5,
        bfl_api_key="bfl-key",
        cloudflare_account_id="account",
        cloudflare_api_token="token",
    )
    assert provider_options(settings) == ProviderOptions(
        cloudflare_account_id="account",
        cloudflare_api_token="token",
        cloudflare_base_url="http://127.0.0.1:9001/client/v4",
        cloudflare_concurrency=2,
        bfl_api_key="bfl-key",
        bfl_base_url="http://127.0.0.1:9000/bfl",
        bfl_concurrency=3,
        timeout_seconds=5,
    )


def test_engine_options_carry_the_local_model_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        device="cpu",
        dtype="float32",
        offload="model",
        allow_download=False,
    )
    assert engine_options(settings, "flux.2-klein-4b") == EngineOptions(
        cache_dir=tmp_path / "cache",
        allow_download=False,
        runtime=ModelRuntime(device="cpu", dtype="float32", offload="model"),
    )


def test_each_model_gets_its_own_runtime(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        models=["tiny-random", "tiny-random-dev", "cf:flux-2-klein-4b"],
        dtype="float32",
        step_cache="first-block",
        runtime={
            "tiny-random-dev": {"dtype": "bfloat16", "quantize_transformer": "torchao-int8", "prompt_cache_mb": 0}
        },
    )
    options = engine_options_per_model(settings)
    assert list(options) == settings.models
    assert options["tiny-random"].runtime == ModelRuntime(dtype="float32", step_cache="first-block")
    assert options["tiny-random-dev"].runtime == ModelRuntime(
        dtype="bfloat16", step_cache="first-block", quantize_transformer="torchao-int8", prompt_cache_mb=0
    )
    assert {each.cache_dir for each in options.values()} == {tmp_path / "cache"}


def test_the_bucket_options_come_from_the_object_store_settings(tmp_path: Path) -> None:
    assert bucket_options(Settings(data_dir=tmp_path)) is None
    settings = Settings(
        data_dir=tmp_path,
        object_store_url="s3://team-images/fluxserve/",
        object_store_endpoint_url="http://127.0.0.1:9000",
        object_store_region="eu-west-1",
        object_store_access_key_id="id",
        object_store_secret_access_key="secret",
        object_store_timeout_seconds=3,
    )
    assert bucket_options(settings) == BucketOptions(
        bucket="team-images",
        prefix="fluxserve/",
        endpoint_url="http://127.0.0.1:9000",
        region="eu-west-1",
        access_key_id="id",
        secret_access_key="secret",
        timeout_seconds=3,
    )
