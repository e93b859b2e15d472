"""The body of a webhook: the event's type and time, and the job as GET /v1/jobs/{id} shows it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fluxserve.jobs.models import Job
from fluxserve.jobs.views import job_view, view_json
from fluxserve.storage.signing import UrlSigner


def event_body(job: Job, event: str, at: float, signer: UrlSigner) -> str:
    """The JSON body: ``type``, ``timestamp`` (ISO 8601 UTC) and the job as GET /v1/jobs/{id} shows it."""
    base_url = job.webhook.base_url if job.webhook is not None else ""
    payload = {
        "type": f"job.{event}",
        "timestamp": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": view_json(job_view(job, base_url, signer)),
    }
    return json.dumps(payload, separators=(",", ":"))
