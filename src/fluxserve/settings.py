"""Server settings: one object, built once at start-up and passed down.

Values come from, highest first: command-line flags, environment variables (``FLUXSERVE_*``;
``FLUXSERVE_MODELS`` is comma-separated, ``FLUXSERVE_RUNTIME`` a JSON object), a TOML config
file (``--config``), then defaults. Each local model runs with the server-wide runtime fields
(device, dtype, offload, quantization, speed options) overridden by its own ``runtime`` table.
Plain data: no engine is imported here. Defaults shared with the engines and the CLI come from
:mod:`fluxserve.defaults`; the composition roots turn settings into engine options
(:mod:`fluxserve.wiring`).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from fluxserve.defaults import (
    BFL_CONCURRENCY,
    CLOUDFLARE_BASE_URL,
    CLOUDFLARE_CONCURRENCY,
    CONTENT_FILTER_MODEL,
    DEFAULT_MODEL,
    LORA_CACHE_SIZE,
    LORA_HOTSWAP_RANK,
    MAX_LORAS_PER_REQUEST,
    PROMPT_CACHE_MB,
    PROVIDER_TIMEOUT_SECONDS,
    BflRegion,
    ContentFilterScope,
    Dtype,
    Offload,
    Quantization,
    StepCache,
    default_cache_dir,
    default_data_dir,
)
from fluxserve.errors import InvalidRequest

# S3's bucket names: 3-63 lowercase letters, digits, dots and hyphens, a letter or digit at each end.
_BUCKET_URL = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?")

# allow_inf_nan=False: "inf" would pass gt=0 and mean "no limit" by accident (max_wait_seconds=inf was a 500).
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RuntimeFields(BaseModel):
    """How a local model runs: server-wide in :class:`Settings`, per model in its ``runtime`` table.

    The same fields as ``engines.runtime.ModelRuntime``, which :mod:`fluxserve.wiring` builds from them.
    """

    model_config = _STRICT

    device: str | None = None
    """cuda, cuda:1, mps or cpu; default: the best available."""
    dtype: Dtype | None = None
    """Default: float32 on the CPU, bfloat16 elsewhere."""
    offload: Offload = "none"
    quantize_transformer: Quantization = "none"
    quantize_text_encoder: Quantization = "none"
    gguf_file: str | None = None
    """With quantize_transformer = "gguf": a local .gguf file, or repo_id/file.gguf on the hub."""
    step_cache: StepCache = "none"
    compile: bool = False
    attention: str | None = None
    """A diffusers attention backend (native, flash, sage...); default: the library's."""
    prompt_cache_mb: float = Field(PROMPT_CACHE_MB, ge=0)
    memory_gb: float | None = Field(None, gt=0)
    """The device memory (GiB) the memory plan checks a model against at load; default: the device's
    free memory on CUDA, no check elsewhere."""

    @field_validator("device", "gguf_file", "attention")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("quantize_text_encoder")
    @classmethod
    def _no_gguf_text_encoder(cls, value: Quantization) -> Quantization:
        if value == "gguf":
            raise ValueError("gguf files are for the transformer only; use bnb-8bit, bnb-4bit or torchao-int8")
        return value


RUNTIME_FIELDS = tuple(RuntimeFields.model_fields)


def gguf_mismatch(runtime: Mapping[str, Any]) -> tuple[str, str] | None:
    """The field to fix and why, when one model's ``quantize_transformer`` and ``gguf_file`` disagree."""
    gguf = runtime.get("quantize_transformer") == "gguf"
    if gguf and runtime.get("gguf_file") is None:
        return "gguf_file", "quantize_transformer = gguf needs a gguf_file"
    if not gguf and runtime.get("gguf_file") is not None:
        return "quantize_transformer", "gguf_file needs quantize_transformer = gguf"
    return None


class Settings(RuntimeFields):
    """What a server runs with. The runtime fields it inherits are every local model's defaults;
    ``runtime`` holds each model's own overrides (:meth:`runtime_for` merges the two)."""

    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    """Where jobs, keys, usage and webhook deliveries are kept: ``postgresql://user:password@host/db``
    for Postgres; default: the SQLite file in ``data_dir``."""
    database_pool_size: int = Field(10, ge=1, le=1000)
    """Postgres: the most connections the server opens."""
    database_timeout_seconds: float = Field(5, gt=0)
    """Postgres: how long a request waits for a connection before it is answered 503."""
    models: list[str] = Field(default_factory=lambda: [DEFAULT_MODEL], min_length=1)
    model_aliases: dict[str, str] = Field(default_factory=dict)
    """Provider model names (as Replicate, BFL and Workers AI clients send them, without their
    prefix: ``flux-2-dev``) mapped to served models, over the defaults that
    :func:`fluxserve.engines.aliases.default_aliases` derives from ``models``
    (TOML ``[model_aliases]``; in the environment a JSON object)."""
    cache_dir: Path = Field(default_factory=default_cache_dir)
    runtime: dict[str, RuntimeFields] = Field(default_factory=dict)
    """Per model: runtime fields that override the server-wide ones for that model
    (TOML ``[runtime."flux.2-dev"]``; in the environment a JSON object of objects)."""
    allow_download: bool = True
    warmup: bool = True
    public_url: str | None = None
    """The server's address as clients see it (behind a proxy); image URLs start with it."""
    max_queue: int = Field(64, ge=1)
    """Jobs waiting per model before new requests get 429."""
    max_body_mb: float = Field(64, gt=0)
    max_upload_mb: float = Field(20, gt=0)
    max_uploads: int = Field(10, ge=1)
    max_upload_megapixels: float = Field(40, gt=0)
    """The most pixels one reference image may have, in millions (read from its header, before decoding)."""
    max_decode_megapixels: float = Field(100, gt=0)
    """The most reference pixels one request may make the server decode, in millions, all images together."""
    max_concurrent_decodes: int = Field(2, ge=1)
    """Requests decoding reference images at once, server-wide; more wait their turn (bounds memory)."""
    max_output_megapixels: float = Field(40, gt=0)
    """Output megapixels one request may ask for (n x width x height)."""
    encode_threads: int = Field(2, ge=1)
    job_retention_hours: float = Field(168, gt=0)
    """Finished jobs and their images are deleted this long after they finish."""
    cleanup_interval_seconds: float = Field(600, gt=0)
    """How often the retention clean-up runs."""
    lease_seconds: float = Field(30, gt=0)
    """A worker holds a running job for this long and renews the hold while it works; a job whose
    worker died goes back to the queue once its lease runs out. A process's webhook sender holds its
    pending deliveries the same way; another process takes over those of one that died."""
    queue_poll_seconds: float = Field(1, gt=0)
    """How often an idle worker looks in the store for jobs another process queued."""
    preview_every: int = Field(0, ge=0)
    """A preview image in the progress event every this many steps (0: none)."""
    sse_keepalive_seconds: float = Field(15, gt=0)
    """A comment line this often keeps an idle event stream open through proxies."""
    sse_max_pending_events: int = Field(64, ge=1)
    """Events one event-stream watcher may fall behind (a client that stopped reading) before its
    stream ends; a job's event stream can be resumed with Last-Event-ID."""
    max_wait_seconds: float = Field(60, ge=0)
    """The longest ``Prefer: wait=N`` honoured."""
    header_timeout_seconds: float = Field(10, gt=0)
    """A connection whose request headers are not complete this long after they began is closed."""
    body_timeout_seconds: float = Field(30, gt=0)
    """A request whose body stalls (no bytes) this long is answered 408 and its connection closed."""
    webhook_secret: str | None = None
    """The Standard Webhooks signing secret (``whsec_`` + base64); default: made once, kept in the data dir."""
    webhook_max_attempts: int = Field(8, ge=1)
    webhook_retry_base_seconds: float = Field(1.0, gt=0)
    """Retry n waits base x 2^(n-1) seconds, capped at webhook_retry_max_seconds."""
    webhook_retry_max_seconds: float = Field(300, gt=0)
    webhook_timeout_seconds: float = Field(10, gt=0)
    no_auth: bool = False
    """Serve without API keys even on a network address (a warning is logged at every start)."""
    cors_origins: list[str] = Field(default_factory=list)
    """Web origins allowed to call the API from a browser (``*`` for any); none by default."""
    url_ttl_seconds: int = Field(3600, ge=1)
    """How long a signed image URL works."""
    url_signing_secret: str | None = None
    """The key that signs image URLs; default: made once, kept in the data dir."""
    replicate_file_ttl_seconds: int = Field(3600, ge=60)
    """How long a file uploaded with POST /v1/files (Replicate's files API) can be used."""
    replicate_fetch_hosts: list[str] = Field(default_factory=list)
    """Hosts whose http(s) URLs a prediction's input images may name (fetched by the server); none by default."""
    cloudflare_account_id: str | None = None
    """Workers AI: the account that runs the ``cf:`` models (also read from CLOUDFLARE_ACCOUNT_ID)."""
    cloudflare_api_token: str | None = None
    """Workers AI: an API token allowed to run Workers AI (also read from CLOUDFLARE_API_TOKEN)."""
    cloudflare_base_url: str = CLOUDFLARE_BASE_URL
    cloudflare_concurrency: int = Field(CLOUDFLARE_CONCURRENCY, ge=1, le=64)
    """Workers AI requests in flight at once."""
    bfl_api_key: str | None = None
    """Black Forest Labs: the key for the ``bfl:`` models (also read from BFL_API_KEY)."""
    bfl_region: BflRegion = "global"
    bfl_base_url: str | None = None
    """Default: https://api.bfl.ai, api.eu.bfl.ai or api.us.bfl.ai by ``bfl_region``."""
    bfl_concurrency: int = Field(BFL_CONCURRENCY, ge=1, le=64)
    """BFL tasks in flight at once (BFL allows 24)."""
    provider_timeout_seconds: float = Field(PROVIDER_TIMEOUT_SECONDS, gt=0)
    """The longest one call to a hosted provider may take."""
    lora_dir: Path | None = None
    """A folder of LoRA ``.safetensors`` files, named in requests by their path inside it without
    the suffix (``style`` or ``people/alice``); default: none (only Hugging Face repo ids, when
    downloads are allowed or the file is in the cache)."""
    max_loras_per_request: int = Field(MAX_LORAS_PER_REQUEST, ge=1, le=16)
    lora_cache_size: int = Field(LORA_CACHE_SIZE, ge=1, le=64)
    """Adapters each local model keeps loaded; the least recently used is unloaded first."""
    lora_hotswap_rank: int = Field(LORA_HOTSWAP_RANK, ge=1, le=1024)
    """Models with compile on: the highest LoRA rank they hot-swap (their adapter slots are padded to it)."""
    object_store_url: str | None = None
    """Keep images in an S3-compatible bucket, ``s3://bucket`` or ``s3://bucket/prefix``, so that every
    server naming it serves every image (the ``s3`` extra); default: the data directory."""
    object_store_endpoint_url: str | None = None
    """The S3 API's address for a server other than AWS (MinIO, Ceph, R2...); default: boto3's (AWS)."""
    object_store_region: str | None = None
    """Default: boto3's (``AWS_REGION``, ``AWS_DEFAULT_REGION``, ``~/.aws/config``)."""
    object_store_access_key_id: str | None = None
    """With object_store_secret_access_key; default: boto3's credentials (``AWS_*`` variables, profile, role)."""
    object_store_secret_access_key: str | None = None
    object_store_timeout_seconds: float = Field(10, gt=0)
    """The longest the bucket may take to connect or answer (each of 3 tries) before a request gets 503."""
    run_workers: bool = True
    """Run a worker per model in this process. ``false``: an ingress-only server (the ``--ray``
    ingress replicas) that queues jobs in a shared Postgres store for model replicas elsewhere and
    validates requests against the capabilities those replicas publish there."""
    ray_address: str | None = None
    """``fluxserve serve --ray``: the Ray cluster to join (``ray start --head`` prints it); default:
    a running local cluster, else a new one in this process."""
    ray_min_replicas: int = Field(1, ge=0)
    """``--ray``: the fewest replicas of each model deployment. 0 lets an idle model release its GPU:
    the deployment starts with one replica (which publishes what the model accepts), goes to zero
    when idle, and a job queued for the model wakes it again."""
    ray_max_replicas: int = Field(4, ge=1)
    """``--ray``: the most replicas of each model deployment."""
    ray_target_queue_per_replica: float = Field(2, gt=0)
    """``--ray``: the jobs (queued and running) per replica that autoscaling aims for."""
    ray_upscale_delay_seconds: float = Field(10, ge=0)
    """``--ray``: how long the queue must call for more replicas before one is added."""
    ray_downscale_delay_seconds: float = Field(300, ge=0)
    """``--ray``: how long the queue must call for fewer replicas before one is removed."""
    ray_num_cpus: float = Field(1, ge=0)
    """``--ray``: CPUs Ray reserves for each model replica (its GPUs: 1 on ``cuda``, 0 on ``cpu``)."""
    ray_ingress_replicas: int = Field(1, ge=1)
    """``--ray``: the HTTP ingress replicas (stateless: they run no model)."""
    ray_ingress_num_cpus: float = Field(0.5, ge=0)
    """``--ray``: CPUs Ray reserves for each ingress replica."""
    content_filter: ContentFilterScope = "off"
    """Which images the content filter judges: ``refs`` (reference images, before a job is queued),
    ``outputs`` (generated images, before they are stored), ``both`` or ``off``."""
    content_filter_model: str = CONTENT_FILTER_MODEL
    """The image classifier (a Hugging Face repo id or a local folder) the filter runs through
    transformers; downloaded into cache_dir like the models when allow_download is on."""
    content_filter_threshold: float = Field(0.5, ge=0)
    """An image is blocked when the classifier's probability of content_filter_labels reaches this
    (0 blocks every image; above 1, none)."""
    content_filter_labels: list[str] = Field(default_factory=lambda: ["nsfw"], min_length=1)
    """The classifier's labels that count as unsafe (their probabilities are added up)."""
    c2pa_cert_file: Path | None = None
    """A PEM certificate chain (signing certificate first, then its CA) that signs C2PA Content
    Credentials into every output image; with c2pa_key_file (the ``c2pa`` extra)."""
    c2pa_key_file: Path | None = None
    """The PEM private key of c2pa_cert_file's signing certificate."""
    metrics: bool = True
    """Serve Prometheus metrics at ``/metrics`` and count what they report."""
    metrics_require_key: bool = False
    """``/metrics`` answers only requests with an admin key (default: anyone who can reach the server)."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per log line, with the request, job and key ids (for a log shipper)."""
    otlp_endpoint: str | None = None
    """Send OpenTelemetry spans of requests and jobs to this OTLP/HTTP collector, such as
    ``http://127.0.0.1:4318`` (the ``tracing`` extra); default: no tracing, at no cost."""

    @field_validator("models", "cors_origins", "content_filter_labels", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [m.strip() for m in value.split(",") if m.strip()] if isinstance(value, str) else value

    @field_validator("replicate_fetch_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        hosts = value.split(",") if isinstance(value, str) else value
        return [str(host).strip().lower() for host in hosts if str(host).strip()] if isinstance(hosts, list) else hosts

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin such as https://studio.example.com (no path)")
        return value

    @field_validator("object_store_url")
    @classmethod
    def _bucket_url(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET_URL.fullmatch(value):
            raise ValueError(f"{value!r} is not a bucket URL such as s3://my-bucket or s3://my-bucket/fluxserve")
        return value

    @field_validator("object_store_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+/?", value):
            raise ValueError(f"{value!r} is not an address such as http://127.0.0.1:9000 (no path)")
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an OTLP/HTTP address such as http://127.0.0.1:4318")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = database_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("models")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each model may be listed once")
        return value

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _parse_aliases(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f'not JSON ({error}); give an object such as {{"flux-2-pro": "flux.2-dev"}}') from None

    @field_validator("runtime", mode="before")
    @classmethod
    def _parse_runtime(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(
                f'not JSON ({error}); give an object such as {{"flux.2-dev": {{"offload": "model"}}}}'
            ) from None

    @model_validator(mode="after")
    def _runtimes_fit_the_models(self) -> Settings:
        for model in self.runtime:
            if model not in self.models:
                served = ", ".join(self.models)
                raise _setting_error(
                    f"runtime.{model}",
                    f"{model!r} is not served (models: {served}); add it to models or drop its table",
                )
        for alias, model in self.model_aliases.items():
            if model not in self.models:
                served = ", ".join(self.models)
                raise _setting_error(f"model_aliases.{alias}", f"{model!r} is not served (models: {served})")
        for model in self.models:
            mismatch = gguf_mismatch(self.runtime_for(model))
            if mismatch is not None:
                in_table = bool({"quantize_transformer", "gguf_file"} & self._table_fields(model))
                field = f"runtime.{model}.{mismatch[0]}" if in_table else mismatch[0]
                raise _setting_error(field, mismatch[1] + ("" if in_table else f" (model {model})"))
        return self

    @model_validator(mode="after")
    def _replica_bounds(self) -> Settings:
        if self.ray_min_replicas > self.ray_max_replicas:
            raise _setting_error(
                "ray_min_replicas", f"{self.ray_min_replicas} is more than ray_max_replicas ({self.ray_max_replicas})"
            )
        return self

    @model_validator(mode="after")
    def _whole_credentials(self) -> Settings:
        if (self.object_store_access_key_id is None) != (self.object_store_secret_access_key is None):
            raise _setting_error(
                "object_store_secret_access_key",
                "set object_store_access_key_id and object_store_secret_access_key together, or neither",
            )
        return self

    @model_validator(mode="after")
    def _whole_c2pa_signer(self) -> Settings:
        if (self.c2pa_cert_file is None) != (self.c2pa_key_file is None):
            raise _setting_error("c2pa_key_file", "set c2pa_cert_file and c2pa_key_file together, or neither")
        return self

    def _table_fields(self, model: str) -> set[str]:
        table = self.runtime.get(model)
        return set() if table is None else table.model_fields_set

    def runtime_for(self, model: str) -> dict[str, Any]:
        """The runtime fields of ``model``: the server-wide values, overridden by its own table."""
        values = {name: getattr(self, name) for name in RUNTIME_FIELDS}
        table = self.runtime.get(model)
        if table is not None:
            values.update(table.model_dump(include=table.model_fields_set))
        return values

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


POSTGRES_SCHEMES = ("postgresql", "postgres")


def database_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a ``database_url``, or None: a Postgres URL is all it may be."""
    example = "postgresql://user:password@host:5432/fluxserve"
    scheme, separator, _ = url.partition("://")
    if not separator or scheme.lower() not in POSTGRES_SCHEMES:
        return f"should be a Postgres URL such as {example} (leave it unset for the SQLite file in data_dir)"
    try:
        urlsplit(url).port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError as error:
        return f"{error}; write it as {example}"
    return None


def _setting_error(field: str, message: str) -> PydanticCustomError:
    """A check across fields, reported (by :func:`load_settings`) as ``setting <field>: <message>``."""
    return PydanticCustomError("setting", "{message}", {"message": message, "field": field})


# The providers' own variable names, read when the FLUXSERVE_ one is not set.
_CONVENTIONAL_ENV = {
    "cloudflare_account_id": "CLOUDFLARE_ACCOUNT_ID",
    "cloudflare_api_token": "CLOUDFLARE_API_TOKEN",
    "bfl_api_key": "BFL_API_KEY",
}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {name: environ[var] for name, var in _CONVENTIONAL_ENV.items() if environ.get(var)}
    for name in Settings.model_fields:
        raw = environ.get(f"FLUXSERVE_{name.upper()}")
        if raw is not None and raw != "":
            values[name] = raw
    return values


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the sources and validate; a bad value is an :class:`InvalidRequest` naming it."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            values.update(tomllib.loads(config_file.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise InvalidRequest(f"cannot read config file {config_file}: {error}", param="config") from None
    values.update(_from_env(os.environ if environ is None else environ))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as error:
        detail = error.errors(include_url=False)[0]
        field = ".".join(str(p) for p in detail["loc"]) or detail.get("ctx", {}).get("field") or "settings"
        raise InvalidRequest(f"setting {field}: {detail['msg']}", param=field) from None
