"""The body of a webhook: the event's type and time, and the job as GET /v1/jobs/{id} shows it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from fluxserve.jobs.models import Job
from fluxserve.jobs.views import JobProgress, job_view, view_json
from fluxserve.storage.signing import UrlSigner

BodyMaker = Callable[[Job, str, float, UrlSigner, JobProgress | None], str]
"""Makes a webhook body from a job, its event, the event's time, the URL signer and the job's progress."""


def event_body(job: Job, event: str, at: float, signer: UrlSigner, progress: JobProgress | None = None) -> str:
    """The JSON body: ``type``, ``timestamp`` (ISO 8601 UTC) and the job as GET /v1/jobs/{id} shows it."""
    base_url = job.webhook.base_url if job.webhook is not None else ""
    payload = {
        "type": f"job.{event}",
        "timestamp": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": view_json(job_view(job, base_url, signer, progress=progress)),
    }
    return json.dumps(payload, separators=(",", ":"))
