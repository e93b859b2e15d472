"""What the jobs layer needs of a durable job store: :class:`JobStore`, a protocol.

The server runs on :class:`~fluxserve.jobs.sql_store.SqlJobStore`, over SQLite or Postgres alike.
Work is handed to workers in memory today; claiming jobs across processes (a ``claim(model, worker,
lease)`` that is ``SELECT ... FOR UPDATE SKIP LOCKED`` on Postgres) would be one more method here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fluxserve.errors import ErrorCode
from fluxserve.jobs.models import Job, JobSpec, JobStatus, OutputImage, Usage, WebhookTarget


@dataclass(frozen=True)
class Idempotency:
    """A client's ``Idempotency-Key`` and a digest of what it sent with it."""

    key: str
    request_hash: str


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: str | None


class JobStore(Protocol):
    """Jobs kept durably: a job the store has accepted survives a crash."""

    def create(
        self,
        job_id: str,
        spec: JobSpec,
        *,
        webhook: WebhookTarget | None = None,
        idempotency: Idempotency | None = None,
        owner: str | None = None,
        charged_at: float | None = None,
    ) -> Job:
        """Record a queued job and reserve its usage for ``owner``, in one step."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def by_idempotency_key(self, key: str, owner: str | None = None) -> tuple[Job, str] | None:
        """The job ``owner`` made with ``key``, and the digest of the request that made it."""
        ...

    def recent(self, limit: int = 50, owner: str | None = None) -> list[Job]: ...

    def unfinished(self, owner: str) -> int:
        """How many of ``owner``'s jobs are queued or running."""
        ...

    def page(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        status: JobStatus | None = None,
        model: str | None = None,
        owner: str | None = None,
    ) -> Page:
        """``owner``'s jobs newest first; a bad cursor is InvalidRequest."""
        ...

    def finished_before(self, cutoff: float, limit: int = 500) -> list[str]: ...

    def delete(self, job_id: str) -> bool:
        """Remove a finished job (False if it has not finished)."""
        ...

    def mark_running(self, job_id: str) -> bool: ...

    def mark_succeeded(self, job_id: str, outputs: list[OutputImage], usage: Usage) -> bool: ...

    def mark_failed(
        self, job_id: str, error_type: ErrorCode, message: str, *, retry_after: int | None = None
    ) -> None: ...

    def mark_canceled(self, job_id: str, *, only_if: JobStatus, note: str | None = None) -> bool: ...

    def requeue_unfinished(self) -> list[Job]:
        """After a restart: every queued or running job is queued again, oldest first."""
        ...
