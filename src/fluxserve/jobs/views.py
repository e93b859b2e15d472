"""A job as clients see it: the body of GET /v1/jobs/{id}, of history pages, events and webhooks.

One builder serves the HTTP API and the webhook sender, so a job reads the same everywhere.
Image URLs need the server's address as the client saw it: ``base_url``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from fluxserve.imaging.encode import ImageFormat
from fluxserve.jobs.models import DeliveryStatus, Job, JobEventType, JobSpec, JobStatus, Operation
from fluxserve.storage.signing import UrlSigner


class JobUrls(BaseModel):
    get: str
    cancel: str
    events: str


class JobProgress(BaseModel):
    step: int = Field(description="Steps done so far, over all images of the job.")
    total: int
    stage: str | None = Field(None, description="Hosted models: submitted, polling or downloading.")


class JobError(BaseModel):
    type: str = Field(description="A stable code, for example generation_failed or model_unavailable.")
    message: str
    retry_after: int | None = Field(
        default=None, description="Seconds after which the same request may succeed (a busy provider)."
    )


class JobImage(BaseModel):
    index: int
    url: str = Field(description="Signed; works without a key until it expires (url_ttl_seconds).")
    seed: int = Field(description="Generate with this seed and n=1 to get this image alone.")
    bytes: int


class JobUsage(BaseModel):
    input_megapixels: float
    output_megapixels: float
    steps: int
    images: int
    cost_usd: float | None = Field(None, description="What a hosted provider charged, where known.")


class JobLora(BaseModel):
    name: str
    scale: float


class JobRequest(BaseModel):
    """The resolved request: every default filled in, the seed drawn."""

    operation: Operation
    prompt: str
    width: int
    height: int
    steps: int
    guidance: float | None
    seed: int
    n: int
    output_format: str
    references: int
    safety_tolerance: int | None = Field(None, description="BFL models: the moderation setting sent, when set.")
    mask: bool = Field(False, description="Whether a mask limited where the first image changed.")
    strength: float | None = Field(None, description="An image-to-image edit's strength (0-1), when it was one.")
    loras: list[JobLora] | None = Field(None, description="The LoRA adapters applied and their scales, when any.")


class WebhookDeliveryView(BaseModel):
    id: str = Field(description="The webhook-id header of the delivery.")
    event: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: float
    delivered_at: float | None = None


class WebhookView(BaseModel):
    url: str
    events: list[JobEventType]
    deliveries: list[WebhookDeliveryView] | None = Field(
        default=None, description="In GET /v1/jobs/{id}; not in the webhook bodies themselves."
    )


class JobView(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    model: str
    created: int = Field(description="Unix seconds.")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    position: int | None = Field(default=None, description="While queued: 1 means next to run.")
    progress: JobProgress | None = Field(default=None, description="While running.")
    error: JobError | None = None
    images: list[JobImage] | None = Field(default=None, description="When succeeded.")
    usage: JobUsage | None = None
    request: JobRequest
    urls: JobUrls
    webhook: WebhookView | None = None


def job_urls(base_url: str, job_id: str) -> JobUrls:
    root = f"{base_url}/v1/jobs/{job_id}"
    return JobUrls(get=root, cancel=f"{root}/cancel", events=f"{root}/events")


def image_url(base_url: str, job: Job, index: int, signer: UrlSigner) -> str:
    """The signed URL of a job's image; it works without an API key until it expires."""
    extension = ImageFormat(job.spec.output_format).extension
    return base_url + signer.sign(f"/v1/images/files/{job.id}/{index}.{extension}")


def _request(spec: JobSpec) -> JobRequest:
    return JobRequest(
        operation=spec.operation,
        prompt=spec.prompt,
        width=spec.width,
        height=spec.height,
        steps=spec.steps,
        guidance=spec.guidance,
        seed=spec.seed,
        n=spec.n,
        output_format=spec.output_format,
        references=spec.references,
        safety_tolerance=spec.safety_tolerance,
        mask=spec.mask,
        strength=spec.strength,
        loras=[JobLora(name=lora.name, scale=lora.scale) for lora in spec.loras] or None,
    )


def job_view(
    job: Job,
    base_url: str,
    signer: UrlSigner,
    *,
    position: int | None = None,
    progress: JobProgress | None = None,
    deliveries: list[WebhookDeliveryView] | None = None,
) -> JobView:
    """The client's view of ``job``; ``position`` and ``progress`` come from the live worker."""
    view = JobView(
        id=job.id,
        status=job.status,
        model=job.spec.model,
        created=int(job.created_at),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        request=_request(job.spec),
        urls=job_urls(base_url, job.id),
    )
    if job.status is JobStatus.QUEUED:
        view.position = position
    if job.status is JobStatus.RUNNING:
        view.progress = progress
    if job.error_type is not None:
        view.error = JobError(type=job.error_type, message=job.error_message or "", retry_after=job.error_retry_after)
    if job.status is JobStatus.SUCCEEDED:
        view.images = [
            JobImage(index=o.index, url=image_url(base_url, job, o.index, signer), seed=o.seed, bytes=o.bytes)
            for o in job.outputs
        ]
    if job.usage is not None:
        view.usage = JobUsage(**job.usage.to_json())
    if job.webhook is not None:
        view.webhook = WebhookView(url=job.webhook.url, events=list(job.webhook.events), deliveries=deliveries)
    return view


def view_json(view: JobView) -> dict[str, Any]:
    return view.model_dump(mode="json", exclude_none=True)
