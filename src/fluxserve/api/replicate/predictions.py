"""A job as a Replicate prediction: the body of GET /v1/predictions/{id}, of pages and of webhooks.

Built from the job's view (:class:`fluxserve.jobs.views.JobView`), so a prediction reads the same as
the job does on the jobs API: ``starting`` while queued, ``processing`` while running, then
``succeeded``, ``failed`` or ``canceled``; ``logs`` carries the seed and the step progress as a
tqdm-style line (the official client's ``prediction.progress`` reads it).

``version`` is the version id the prediction pinned, recorded with its job at submit (so a webhook
needs no settings to show it); a prediction that named the model instead shows ``hidden``, as
Replicate's official models answer predictions made through ``/v1/models/{owner}/{name}/predictions``.
Predictions stored before versions were recorded show ``hidden`` too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fluxserve.api.protocol.replicate import Prediction, PredictionMetrics, PredictionStatus, PredictionUrls
from fluxserve.api.replicate.inputs import echoed_input
from fluxserve.jobs.models import Job, JobStatus
from fluxserve.jobs.views import JobProgress, JobView, job_view
from fluxserve.storage.signing import UrlSigner

STATUSES: dict[JobStatus, PredictionStatus] = {
    JobStatus.QUEUED: "starting",
    JobStatus.RUNNING: "processing",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELED: "canceled",
}
BAR_WIDTH = 10
HIDDEN = "hidden"
"""The ``version`` of a prediction that named the model, not a version (Replicate's word for it)."""


def iso(seconds: float | None) -> str | None:
    """Unix seconds as Replicate writes times: ISO 8601, UTC, microseconds, ``Z``."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def progress_line(step: int, total: int) -> str:
    """``50%|█████     | 2/4``: the shape the official client parses into ``prediction.progress``."""
    done = 0 if total <= 0 else min(step, total) * BAR_WIDTH // total
    percent = 0 if total <= 0 else min(step, total) * 100 // total
    return f"{percent:3d}%|{'█' * done}{' ' * (BAR_WIDTH - done)}| {step}/{total}"


def _logs(view: JobView) -> str:
    lines = [f"Using seed: {view.request.seed}"]
    total = view.request.steps * view.request.n
    if view.progress is not None:
        lines.append(progress_line(view.progress.step, view.progress.total))
    elif view.status is JobStatus.SUCCEEDED and total > 0:
        lines.append(progress_line(total, total))
    if view.error is not None:
        lines.append(f"Error: {view.error.message}")
    return "\n".join(lines) + "\n"


def _metrics(view: JobView) -> PredictionMetrics:
    if view.finished_at is None:
        return PredictionMetrics(predict_time=None, total_time=None)
    predict = None if view.started_at is None else round(view.finished_at - view.started_at, 6)
    return PredictionMetrics(predict_time=predict, total_time=round(view.finished_at - view.created_at, 6))


def prediction_urls(base_url: str, job_id: str) -> PredictionUrls:
    root = f"{base_url}/v1/predictions/{job_id}"
    return PredictionUrls(get=root, cancel=f"{root}/cancel", stream=f"{root}/stream")


def prediction(view: JobView, base_url: str, version: str | None) -> Prediction:
    """The prediction a job's view makes; ``base_url`` as the client reached this server; ``version``
    the one the job recorded (its spec's)."""
    request = view.request
    return Prediction(
        id=view.id,
        model=view.model,
        version=version or HIDDEN,
        input=echoed_input(
            request.prompt,
            request.width,
            request.height,
            request.seed,
            request.steps,
            request.guidance,
            request.output_format,
        ),
        logs=_logs(view),
        output=view.images[0].url if view.images else None,
        error=None if view.error is None else view.error.message,
        status=STATUSES[view.status],
        created_at=iso(view.created_at) or "",
        started_at=iso(view.started_at),
        completed_at=iso(view.finished_at),
        urls=prediction_urls(base_url, view.id),
        metrics=_metrics(view),
    )


def prediction_json(view: JobView, base_url: str, version: str | None) -> dict[str, Any]:
    return prediction(view, base_url, version).model_dump(mode="json")


def prediction_body(job: Job, event: str, at: float, signer: UrlSigner, progress: JobProgress | None) -> str:
    """A Replicate webhook's body: the prediction as it is at the event (the webhook sender calls this)."""
    base_url = job.webhook.base_url if job.webhook is not None else ""
    view = job_view(job, base_url, signer, progress=progress)
    return json.dumps(prediction_json(view, base_url, job.spec.version), separators=(",", ":"))
