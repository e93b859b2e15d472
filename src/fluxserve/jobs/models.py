"""What a job is: the resolved request it runs, its state, and its result."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from fluxserve.engines.base import LoraChoice, Progress
from fluxserve.errors import ErrorCode, GenerationCancelled, GenerationError, JobFailed, Moderated


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)

    @property
    def event(self) -> JobEventType | None:
        """The terminal event a job that ended in this status announces it with; None while it is unfinished."""
        return _TERMINAL_EVENT_OF.get(self)


class JobEventType(StrEnum):
    """What happened to a job: the ``event`` of its event stream, and ``job.<type>`` in webhooks."""

    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


_TERMINAL_EVENT_OF = {
    JobStatus.SUCCEEDED: JobEventType.COMPLETED,
    JobStatus.FAILED: JobEventType.FAILED,
    JobStatus.CANCELED: JobEventType.CANCELED,
}
TERMINAL_EVENTS = frozenset(_TERMINAL_EVENT_OF.values())
LIFECYCLE_EVENTS = (JobEventType.QUEUED, JobEventType.STARTED, *_TERMINAL_EVENT_OF.values())
"""Every event but progress, in the order a job can meet them."""
WEBHOOK_EVENTS = LIFECYCLE_EVENTS[1:]
"""What a webhook can be told of (not queued: the response to the request says that)."""


class DeliveryStatus(StrEnum):
    """Where one webhook delivery stands: waiting for its next attempt, done, or given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Operation(StrEnum):
    """What a job does: make images from a prompt, or edit (and combine) reference images."""

    GENERATION = "generation"
    EDIT = "edit"


def new_job_id() -> str:
    """An unguessable id: 144 random bits."""
    return "job_" + secrets.token_urlsafe(18)


@dataclass(frozen=True)
class JobSpec:
    """A fully resolved request: running it again gives the same images."""

    model: str
    operation: Operation
    prompt: str
    width: int
    height: int
    steps: int
    guidance: float | None
    seed: int
    n: int
    output_format: str
    output_compression: int | None
    response_format: str
    references: int = 0
    input_megapixels: float = 0.0
    quality: str | None = None
    user: str | None = None
    partial_images: int = 0
    """Streamed requests: how many partial images to send while the job runs (0-3)."""
    safety_tolerance: int | None = None
    """Hosted models with a moderation setting (BFL): the client's 0-5; None: the provider's default."""
    mask: bool = False
    """Whether a mask (stored with the references) limits where the first reference changes."""
    strength: float | None = None
    """An image-to-image edit's strength (0-1); None: references only condition the generation."""
    loras: tuple[LoraChoice, ...] = ()
    """LoRA adapters and their scales (jobs stored before adapters existed have none)."""
    version: str | None = None
    """The model version the request pinned: a Replicate version id, checked at submit to be the served
    model's. None when the request named the model rather than a version (and for other surfaces' jobs)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def megapixels(self) -> float:
        """What the job is charged against a quota: output plus input megapixels (1024 x 1024 pixels)."""
        return round(self.n * self.width * self.height / 1024**2 + self.input_megapixels, 4)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSpec:
        loras = tuple(LoraChoice(item["name"], float(item["scale"])) for item in data.get("loras") or ())
        return cls(**{**data, "operation": Operation(data["operation"]), "loras": loras})


@dataclass(frozen=True)
class OutputImage:
    index: int
    seed: int
    bytes: int


@dataclass(frozen=True)
class Usage:
    input_megapixels: float
    output_megapixels: float
    steps: int
    images: int
    cost_usd: float | None = None
    """What a hosted provider charged, where known; None for local models."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WebhookTarget:
    """Where a job's events are posted, which of them, and the base of the image URLs they carry.

    ``shape`` is the body's: fluxserve's (``job``: ``job.<event>`` with the job), ``replicate`` (a
    prediction) or ``bfl`` (BFL's task result), for jobs submitted through those surfaces. ``secret``,
    a BFL client's ``webhook_secret``, also signs BFL bodies in ``X-BFL-Signature``. Every delivery is
    signed the Standard Webhooks way as well.
    """

    url: str
    events: tuple[JobEventType, ...] = WEBHOOK_EVENTS
    base_url: str = ""
    shape: str = "job"
    secret: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"url": self.url, "events": list(self.events), "base_url": self.base_url}
        if self.shape != "job":  # stored as before unless another surface made it
            data["shape"] = self.shape
        if self.secret is not None:
            data["secret"] = self.secret
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WebhookTarget:
        events = tuple(JobEventType(event) for event in data["events"])
        return cls(data["url"], events, data.get("base_url", ""), data.get("shape", "job"), data.get("secret"))


@dataclass(frozen=True)
class Job:
    id: str
    spec: JobSpec
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error_type: ErrorCode | None = None
    error_message: str | None = None
    error_retry_after: int | None = None
    """Seconds after which the failed request may succeed if sent again (a busy provider said so)."""
    error_moderated: Moderated | None = None
    """A ``moderation_blocked`` failure: whether the input or the output was refused (None: not known)."""
    outputs: list[OutputImage] = field(default_factory=list)
    usage: Usage | None = None
    attempts: int = 0
    webhook: WebhookTarget | None = None
    idempotency_key: str | None = None
    owner: str | None = None
    """The id of the API key that made the job (None: made without a key)."""

    def failure(self) -> GenerationError | None:
        """What a client that waited for this job is told went wrong; None unless it failed or was canceled."""
        if self.status is JobStatus.CANCELED:
            return GenerationCancelled(f"job {self.id} was canceled")
        if self.status is JobStatus.FAILED:
            code = self.error_type or ErrorCode.GENERATION_FAILED
            return JobFailed(
                self.error_message or "the generation failed",
                code=code,
                retry_after=self.error_retry_after,
                moderated=self.error_moderated,
            )
        return None


@dataclass(frozen=True)
class PartialImage:
    """An early look at a streamed job's image, encoded in the job's output format."""

    index: int
    data: bytes


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job, as watchers see it.

    ``id`` is given when the event is delivered: by the event bus, ``"<boot>-<sequence>"``,
    increasing within one server process, never reused by the next; or, where processes share a
    Postgres database, by the events table, ``"<sequence>"``, the same in every process
    (:mod:`fluxserve.jobs.relay`).
    """

    job_id: str
    type: JobEventType
    progress: Progress | None = None
    job: Job | None = None
    position: int | None = None
    preview: bytes | None = None  # a small JPEG decoded from the latents
    partial_image: PartialImage | None = None
    id: str = ""
    local: bool = False
    """For this process's watchers only, never shared with other processes: a queue position
    update, which each process works out for the watchers it has."""
    relayed: bool = False
    """Published by another process and read from the events table: never shared again, carries
    no image bytes, and sends no webhook (the process it happened in sends that)."""

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS
