"""The jobs API's wire format: history pages and the payloads of a job's event stream.

A job itself is :class:`fluxserve.jobs.views.JobView`: the webhook sender posts the same body,
so it lives with the jobs, below this layer. The terminal events (``completed``, ``failed``,
``canceled``) carry a whole JobView.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fluxserve.jobs.views import JobView


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobView]
    has_more: bool
    next_cursor: str | None = None


class JobEventData(BaseModel):
    """What every non-terminal event carries."""

    job_id: str


class JobQueuedEvent(JobEventData):
    """``queued``: the job waits; ``position`` 1 is next."""

    position: int | None = Field(description="1 for the next job to run; null once it is no longer queued.")


class JobStartedEvent(JobEventData):
    """``started``: a worker took the job."""

    started_at: float | None = None


class JobProgressEvent(JobEventData):
    """``progress``: steps done, over every image of the job."""

    step: int
    total: int
    image: int = Field(description="The image being made, from 0.")
    images: int
    stage: str | None = Field(default=None, description="Hosted models: submitted, polling or downloading.")
    preview: str | None = Field(default=None, description="A JPEG data URL, every preview_every steps when configured.")
