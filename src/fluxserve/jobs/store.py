"""What the jobs layer needs of a durable job store: :class:`JobStore`, a protocol.

The server runs on :class:`~fluxserve.jobs.sql_store.SqlJobStore`, over SQLite or Postgres alike.
Work is handed to workers in memory today; claiming jobs across processes (a ``claim(model, worker,
lease)`` that is ``SELECT ... FOR UPDATE SKIP LOCKED`` on Postgres) would be one more method here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fluxserve.errors import ErrorCode, Moderated
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
    """Jobs kept durably: a job the store has accepted survives a crash.

    The store is the queue: workers in any process claim jobs from it and hold them on a lease.
    """

    exclusive: bool
    """True when one process owns the store, so at its start every running job is an orphan."""

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

    def create_refused(
        self,
        job_id: str,
        spec: JobSpec,
        message: str,
        *,
        moderated: Moderated,
        webhook: WebhookTarget | None = None,
        idempotency: Idempotency | None = None,
        owner: str | None = None,
    ) -> Job:
        """Record a job the content filter refused at submit as failed already (``moderation_blocked``)."""
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

    def claim(self, model: str, worker: str, lease_until: float) -> Job | None:
        """Take ``model``'s oldest queued job for ``worker`` until ``lease_until``; never the same job twice."""
        ...

    def renew(self, job_ids: list[str], worker: str, lease_until: float) -> set[str]:
        """Extend ``worker``'s leases; return the jobs it should stop (canceled, or no longer its own)."""
        ...

    def request_cancel(self, job_id: str) -> bool:
        """Ask whichever worker runs the job to stop it; False if it is not running."""
        ...

    def release(self, job_id: str, worker: str) -> bool:
        """Put ``worker``'s running job back in the queue."""
        ...

    def requeue_expired(self, now: float) -> list[Job]:
        """Running jobs whose lease ran out before ``now`` go back to the queue; returns them."""
        ...

    def queued(self, model: str) -> list[str]:
        """``model``'s queued job ids, next first."""
        ...

    def queued_count(self, model: str) -> int: ...

    def position(self, job_id: str) -> int | None:
        """1 for the next job of its model; None when the job is not queued."""
        ...

    def mark_succeeded(
        self, job_id: str, outputs: list[OutputImage], usage: Usage, *, worker: str | None = None
    ) -> bool: ...

    def mark_failed(
        self,
        job_id: str,
        error_type: ErrorCode,
        message: str,
        *,
        retry_after: int | None = None,
        worker: str | None = None,
        moderated: Moderated | None = None,
    ) -> None: ...

    def mark_canceled(
        self, job_id: str, *, only_if: JobStatus, note: str | None = None, worker: str | None = None
    ) -> bool: ...

    def requeue_unfinished(self) -> list[Job]:
        """After a restart: every queued or running job is queued again, oldest first."""
        ...
