"""The body of a webhook: the event's type and time, and the job as GET /v1/jobs/{id} shows it; or, for
a job submitted through BFL's API, BFL's task result (its webhook guide, black-forest-labs/skills:
``{"id", "status": "Ready", "result": {"sample", "prompt", "seed"}, "timestamp"}``, or
``{"id", "status": "Error", "error", "message", "timestamp"}``, the status being ``Request Moderated`` or
``Content Moderated`` when a moderation refused the input or the output)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from fluxserve.errors import ErrorCode, FluxserveError, Moderated
from fluxserve.jobs.models import Job, JobStatus
from fluxserve.jobs.views import JobProgress, image_url, job_view, view_json
from fluxserve.storage.signing import UrlSigner

BflFailed = Literal["Error", "Request Moderated", "Content Moderated"]
"""BFL's statuses of a task that ended without its image (docs.bfl.ai, Errors)."""
BodyMaker = Callable[[Job, str, float, UrlSigner, JobProgress | None], str]
"""Makes a webhook body from a job, its event, the event's time, the URL signer and the job's progress."""


def event_body(job: Job, event: str, at: float, signer: UrlSigner, progress: JobProgress | None = None) -> str:
    """The JSON body: ``type``, ``timestamp`` (ISO 8601 UTC) and the job as GET /v1/jobs/{id} shows it."""
    base_url = job.webhook.base_url if job.webhook is not None else ""
    timestamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if job.webhook is not None and job.webhook.shape == "bfl":
        return json.dumps(bfl_body(job, timestamp, base_url, signer), separators=(",", ":"))
    view = job_view(job, base_url, signer, progress=progress)
    payload = {"type": f"job.{event}", "timestamp": timestamp, "data": view_json(view)}
    return json.dumps(payload, separators=(",", ":"))


def bfl_body(job: Job, timestamp: str, base_url: str, signer: UrlSigner) -> dict[str, Any]:
    """BFL's webhook body for a finished job: Ready with the image's signed URL, else what went wrong."""
    if job.status is JobStatus.SUCCEEDED:
        output = job.outputs[0]
        sample = image_url(base_url, job, output.index, signer)
        result = {"sample": sample, "prompt": job.spec.prompt, "seed": output.seed}
        return {"id": job.id, "status": "Ready", "result": result, "timestamp": timestamp}
    failure = job.failure()
    code = ErrorCode.GENERATION_FAILED if failure is None else failure.code
    message = "the job did not finish" if failure is None else str(failure)
    status = bfl_failed_status(failure)
    return {"id": job.id, "status": status, "error": code.value, "message": message, "timestamp": timestamp}


def bfl_failed_status(failure: FluxserveError | None) -> BflFailed:
    """BFL's status for a task that did not succeed: a ``moderation_blocked`` failure is ``Request Moderated``
    when the input was refused, ``Content Moderated`` when the output was (or it is not known which);
    anything else is ``Error``."""
    if failure is None or failure.code is not ErrorCode.MODERATION_BLOCKED:
        return "Error"
    if getattr(failure, "moderated", None) is Moderated.INPUT:
        return "Request Moderated"
    return "Content Moderated"
