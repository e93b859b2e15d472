"""Replicate's wire format: prediction requests and answers, file objects, problem details.

Field names follow Replicate's HTTP API and its FLUX.2 models (``black-forest-labs/flux-2-dev``,
``-pro``, ``-flex``); the official ``replicate`` Python client reads these bodies.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ASPECT_RATIOS = ("1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3", "custom", "match_input_image")
AspectRatio = Literal["1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3", "custom", "match_input_image"]
WebhookEvent = Literal["start", "output", "logs", "completed"]
PredictionStatus = Literal["starting", "processing", "succeeded", "failed", "canceled"]


class FluxInput(BaseModel):
    """The ``input`` of a FLUX.2 prediction, as Replicate's model pages name its fields."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    input_images: list[str] | None = Field(None, description="URLs (this server's files) or data URIs.")
    aspect_ratio: AspectRatio | None = Field(None, description="Default 1:1; match_input_image with input_images.")
    resolution: str | None = Field(None, description='"0.25 MP" ... "4 MP" or match_input_image; default "1 MP".')
    width: int | None = Field(None, description="Only with aspect_ratio custom.")
    height: int | None = Field(None, description="Only with aspect_ratio custom.")
    output_format: Literal["webp", "jpg", "png"] | None = Field(None, description="Default webp.")
    output_quality: int | None = Field(None, ge=0, le=100, description="jpg and webp; not used for png.")
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    safety_tolerance: int | None = Field(None, description="Models with a moderation setting only (BFL's).")
    go_fast: bool | None = Field(None, description="Only false: no faster variant is served here.")
    disable_safety_checker: bool | None = Field(None, description="Accepted either way: no output checker runs here.")
    prompt_upsampling: bool | None = Field(None, description="Only false: prompts are used as written.")


class PredictionRequest(BaseModel):
    """The body of POST /v1/predictions and POST /v1/models/{owner}/{name}/predictions."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(
        None, description="A version id (GET /v1/models/{owner}/{name}), owner/name:<id>, owner/name, or a model name."
    )
    model: str | None = Field(None, description="owner/name, as some clients send it with POST /v1/predictions.")
    input: dict[str, Any]
    webhook: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    stream: bool | None = Field(None, description="Accepted: every prediction has urls.stream.")


class PredictionUrls(BaseModel):
    get: str
    cancel: str
    stream: str = Field(description="Replicate's Server-Sent Events for the prediction: logs, output, error, done.")


class PredictionMetrics(BaseModel):
    predict_time: float | None = Field(None, description="Seconds from start to finish.")
    total_time: float | None = Field(None, description="Seconds from creation to finish.")


class Prediction(BaseModel):
    id: str
    model: str
    version: str
    input: dict[str, Any]
    logs: str
    output: str | None = Field(None, description="The image's signed URL, once succeeded.")
    data_removed: bool = False
    error: str | None = None
    status: PredictionStatus
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    urls: PredictionUrls
    metrics: PredictionMetrics


class PredictionPage(BaseModel):
    previous: str | None = None
    next: str | None = None
    results: list[Prediction]


class FileUrls(BaseModel):
    get: str


class FileObject(BaseModel):
    id: str
    name: str
    content_type: str
    size: int
    etag: str
    checksums: dict[str, str]
    metadata: dict[str, Any]
    created_at: str
    expires_at: str
    urls: FileUrls


class VersionObject(BaseModel):
    """A model's version: fluxserve serves one per model, its id a hash of the served configuration."""

    id: str = Field(description="SHA-256 hex of what defines the served model; stable across restarts.")
    created_at: str = Field(description="When this server started serving it.")
    cog_version: str
    openapi_schema: dict[str, Any] = Field(description="components.schemas.Input and Output.")


class VersionPage(BaseModel):
    previous: str | None = None
    next: str | None = None
    results: list[VersionObject]


class ModelObject(BaseModel):
    """GET /v1/models/{owner}/{name}: the model a Replicate name means here."""

    url: str
    owner: str
    name: str
    description: str | None = None
    visibility: Literal["public", "private"] = "public"
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    run_count: int = Field(default=0, description="Not counted here: always 0.")
    cover_image_url: str | None = None
    default_example: None = None
    latest_version: VersionObject


class Problem(BaseModel):
    """Replicate's error body (RFC 7807 problem details)."""

    title: str
    detail: str
    status: int


PATHS = ("/v1/predictions", "/v1/models/", "/v1/files")


def is_replicate_path(path: str) -> bool:
    """Whether a request path belongs to the Replicate surface (its errors are problem details)."""
    if path.startswith("/v1/models/"):  # /v1/models/{id} (one segment) is fluxserve's model card
        parts = path.removeprefix("/v1/models/").split("/")  # owner, name, then what of the model
        rest = parts[2:]
        one_version = len(rest) == 2 and rest[0] == "versions"
        return len(parts) >= 2 and (rest in ([], ["predictions"], ["versions"]) or one_version)
    return path == "/v1/predictions" or path.startswith(("/v1/predictions/", "/v1/files"))
