"""Jobs' metrics, counted from the events on the bus: one listener sees every way a job starts and ends.

Only events of this process count: a relayed copy of another process's event (Postgres) was
counted there, so a Prometheus summing all servers counts each job once.
"""

from __future__ import annotations

from fluxserve.jobs.models import JobEvent, JobEventType
from fluxserve.telemetry.metrics import Metrics


def count_event(metrics: Metrics, event: JobEvent) -> None:
    """Record what ``event`` says about its job: its wait in the queue, its end, its images."""
    job = event.job
    if event.relayed or job is None:
        return
    if event.type is JobEventType.STARTED and job.started_at is not None:
        metrics.job_started(job.spec.model, job.started_at - job.created_at)
    elif event.terminal:
        ran = None if job.started_at is None or job.finished_at is None else job.finished_at - job.started_at
        metrics.job_ended(job.spec.model, job.status.value, ran)
        if job.usage is not None and job.usage.images:
            metrics.images_made(job.spec.model, job.usage.images, job.usage.output_megapixels)
