"""The engines' options, built from the settings: the one place the two meet.

``settings.py`` is plain data and imports no engine, and the engines never import the settings;
the composition roots (:mod:`fluxserve.api.app`, the CLI) call these to go from one to the other.
"""

from __future__ import annotations

from fluxserve.defaults import BFL_BASE_URLS
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.loras import LoraOptions
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.engines.safety import OFF, ContentFilter, ImageClassifier
from fluxserve.imaging.credentials import ContentCredentials
from fluxserve.settings import Settings
from fluxserve.storage.files import BucketOptions


def provider_options(settings: Settings) -> ProviderOptions:
    """How to reach the hosted providers; ``bfl_base_url`` defaults to the host of ``bfl_region``."""
    return ProviderOptions(
        cloudflare_account_id=settings.cloudflare_account_id,
        cloudflare_api_token=settings.cloudflare_api_token,
        cloudflare_base_url=settings.cloudflare_base_url.rstrip("/"),
        cloudflare_concurrency=settings.cloudflare_concurrency,
        bfl_api_key=settings.bfl_api_key,
        bfl_base_url=(settings.bfl_base_url or BFL_BASE_URLS[settings.bfl_region]).rstrip("/"),
        bfl_concurrency=settings.bfl_concurrency,
        timeout_seconds=settings.provider_timeout_seconds,
    )


def lora_options(settings: Settings) -> LoraOptions:
    """Where LoRA adapters come from (lora_dir, the hub when downloads are allowed) and how many."""
    return LoraOptions(
        directory=settings.lora_dir,
        allow_download=settings.allow_download,
        max_per_request=settings.max_loras_per_request,
        cache_size=settings.lora_cache_size,
        hotswap_rank=settings.lora_hotswap_rank,
    )


def bucket_options(settings: Settings) -> BucketOptions | None:
    """The bucket that keeps the images (``object_store_url``), or None: the data directory keeps them."""
    if settings.object_store_url is None:
        return None
    bucket, prefix = BucketOptions.split_url(settings.object_store_url)
    return BucketOptions(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=settings.object_store_endpoint_url,
        region=settings.object_store_region,
        access_key_id=settings.object_store_access_key_id,
        secret_access_key=settings.object_store_secret_access_key,
        timeout_seconds=settings.object_store_timeout_seconds,
    )


def model_runtime(settings: Settings, model: str) -> ModelRuntime:
    """How ``model`` runs: the server-wide runtime settings, overridden by the model's own table."""
    return ModelRuntime(**settings.runtime_for(model))


def engine_options(settings: Settings, model: str) -> EngineOptions:
    """How to run the local model ``model``."""
    return EngineOptions(
        cache_dir=settings.cache_dir,
        allow_download=settings.allow_download,
        runtime=model_runtime(settings, model),
        loras=lora_options(settings),
    )


def engine_options_per_model(settings: Settings) -> dict[str, EngineOptions]:
    """The options of every served model, by name."""
    return {model: engine_options(settings, model) for model in settings.models}


def content_credentials(settings: Settings, version: str) -> ContentCredentials | None:
    """The C2PA signer of ``c2pa_cert_file`` and ``c2pa_key_file`` (checked by signing once); None without them."""
    if settings.c2pa_cert_file is None or settings.c2pa_key_file is None:
        return None
    return ContentCredentials.from_files(settings.c2pa_cert_file, settings.c2pa_key_file, version=version)


def content_filter(settings: Settings) -> ContentFilter:
    """The content filter the settings ask for, its classifier loaded (OFF when ``content_filter`` is off)."""
    if settings.content_filter == "off":
        return OFF
    classifier = ImageClassifier(
        settings.content_filter_model,
        threshold=settings.content_filter_threshold,
        labels=settings.content_filter_labels,
        allow_download=settings.allow_download,
    )
    return ContentFilter(classifier.load(), settings.content_filter)
