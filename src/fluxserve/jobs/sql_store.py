"""The jobs table: the :class:`~fluxserve.jobs.store.JobStore` the server runs on, over SQLite or Postgres.

It owns the jobs table's SQL, written once for both databases (:mod:`fluxserve.db.protocol`), and
returns typed :class:`~fluxserve.jobs.models.Job` records. A job's usage row is written in the same
transaction (reserved when queued, billed or released when it ends) through
:mod:`fluxserve.accounts.usage`, which owns that table. ``rowid`` orders jobs made in the same
instant: SQLite's own, a column of that name on Postgres.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any

from fluxserve.accounts import usage as usage_rows
from fluxserve.db import Database, Row
from fluxserve.errors import ErrorCode, InvalidRequest, Moderated
from fluxserve.jobs.models import Job, JobSpec, JobStatus, OutputImage, Usage, WebhookTarget
from fluxserve.jobs.store import Idempotency, Page
from fluxserve.jsonvalues import mend
from fluxserve.numbers import MAX_WHOLE, parse_float, parse_int

log = logging.getLogger("fluxserve.jobs")

HELD = "status = ? AND worker = ?"
"""A job ``worker`` holds: running, claimed by it. Its parameters come from :func:`_held`."""


def _held(worker: str) -> tuple[Any, ...]:
    """The parameters of :data:`HELD` for ``worker``."""
    return (JobStatus.RUNNING, worker)


def _finishing(worker: str | None, *statuses: JobStatus) -> tuple[str, tuple[Any, ...]]:
    """Which job a finishing update may change: one ``worker`` holds, or with no worker, one in any of
    ``statuses`` (a job ended outside any worker). The clause and its parameters."""
    if worker is not None:
        return HELD, _held(worker)
    return f"status IN ({', '.join('?' for _ in statuses)})", statuses


class SqlJobStore:
    """Jobs in either database; the queue workers claim from, on leases."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.exclusive = db.dialect.exclusive
        """One server process owns a SQLite file, so at its start every running job is an orphan;
        on Postgres, other processes' jobs run on until their leases run out."""

    @property
    def db(self) -> Database:
        """The database it keeps the jobs in (other repositories share it)."""
        return self._db

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
        """Record a queued job, and reserve its megapixels in the usage of ``owner`` as of ``charged_at``."""
        now = time.time()
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, model, status, spec, created_at, webhook, idempotency_key, request_hash, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    spec.model,
                    JobStatus.QUEUED,
                    json.dumps(spec.to_json()),
                    now,
                    None if webhook is None else json.dumps(webhook.to_json()),
                    None if idempotency is None else idempotency.key,
                    None if idempotency is None else idempotency.request_hash,
                    owner,
                ),
            )
            expected = usage_rows.Used(
                input_megapixels=spec.input_megapixels,
                output_megapixels=round(spec.megapixels - spec.input_megapixels, 4),
                steps=spec.steps * spec.n,
                images=spec.n,
            )
            usage_rows.reserve(db, job_id, owner, spec.model, now if charged_at is None else charged_at, expected)
        return Job(
            job_id,
            spec,
            JobStatus.QUEUED,
            now,
            webhook=webhook,
            idempotency_key=None if idempotency is None else idempotency.key,
            owner=owner,
        )

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
        """Record a job the content filter refused at submit as failed already (``moderation_blocked``):
        never queued, nothing reserved."""
        now = time.time()
        self._db.execute(
            "INSERT INTO jobs (id, model, status, spec, created_at, finished_at, error_type, error_message, "
            "error_moderated, webhook, idempotency_key, request_hash, owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                spec.model,
                JobStatus.FAILED,
                json.dumps(spec.to_json()),
                now,
                now,
                ErrorCode.MODERATION_BLOCKED,
                message,
                moderated,
                None if webhook is None else json.dumps(webhook.to_json()),
                None if idempotency is None else idempotency.key,
                None if idempotency is None else idempotency.request_hash,
                owner,
            ),
        )
        return Job(
            job_id,
            spec,
            JobStatus.FAILED,
            now,
            finished_at=now,
            error_type=ErrorCode.MODERATION_BLOCKED,
            error_message=message,
            error_moderated=moderated,
            webhook=webhook,
            idempotency_key=None if idempotency is None else idempotency.key,
            owner=owner,
        )

    def get(self, job_id: str) -> Job | None:
        row = self._db.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _job(row)

    def by_idempotency_key(self, key: str, owner: str | None = None) -> tuple[Job, str] | None:
        """The job ``owner`` made with ``key``, and the digest of the request that made it."""
        owned = self._db.dialect.or_empty("owner")  # as the unique index spells it, so the lookup uses it
        row = self._db.fetch_one(f"SELECT * FROM jobs WHERE {owned} = ? AND idempotency_key = ?", (owner or "", key))
        return None if row is None else (_job(row), row["request_hash"])

    def recent(self, limit: int = 50, owner: str | None = None) -> list[Job]:
        """The newest jobs first."""
        return self.page(limit=limit, owner=owner).jobs

    def unfinished(self, owner: str) -> int:
        """How many of ``owner``'s jobs are queued or running."""
        row = self._db.fetch_one(
            "SELECT count(*) AS unfinished FROM jobs WHERE owner = ? AND status IN (?, ?)",
            (owner, JobStatus.QUEUED, JobStatus.RUNNING),
        )
        return 0 if row is None else int(row["unfinished"])

    def page(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        status: JobStatus | None = None,
        model: str | None = None,
        owner: str | None = None,
    ) -> Page:
        """``owner``'s jobs newest first, ``limit`` at a time; ``cursor`` is the previous page's ``next_cursor``."""
        where: list[str] = ["owner IS NULL" if owner is None else "owner = ?"]
        params: list[Any] = [] if owner is None else [owner]
        if cursor is not None:
            created_at, rowid = _parse_cursor(cursor)
            where.append("(created_at < ? OR (created_at = ? AND rowid < ?))")
            params += [created_at, created_at, rowid]
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if model is not None:
            where.append("model = ?")
            params.append(model)
        sql = "SELECT rowid AS row_number, * FROM jobs WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        rows = self._db.fetch_all(sql, (*params, limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _cursor(rows[-1]) if more else None
        return Page(_readable(rows), next_cursor)

    def finished_before(self, cutoff: float, limit: int = 500) -> list[str]:
        """Ids of jobs that finished before ``cutoff`` (a time.time() value), oldest first."""
        rows = self._db.fetch_all(
            "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? ORDER BY finished_at LIMIT ?",
            (cutoff, limit),
        )
        return [row["id"] for row in rows]

    def delete(self, job_id: str) -> bool:
        """Remove a finished job (its webhook deliveries go with it; its usage stays); False if not finished."""
        removed = self._db.execute(
            "DELETE FROM jobs WHERE id = ? AND status IN (?, ?, ?)",
            (job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED),
        )
        return removed == 1

    def claim(self, model: str, worker: str, lease_until: float) -> Job | None:
        """Take ``model``'s oldest queued job for ``worker``, held until ``lease_until``; None when none waits.

        One statement picks and takes the job, so two workers never take the same one.
        """
        rows = self._db.fetch_all(
            "UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1, worker = ?, lease_until = ? "
            "WHERE id = (SELECT id FROM jobs WHERE model = ? AND status = ? ORDER BY created_at, rowid LIMIT 1"
            f"{self._db.dialect.skip_locked}) RETURNING *",
            (JobStatus.RUNNING, time.time(), worker, lease_until, model, JobStatus.QUEUED),
        )
        return _job(rows[0]) if rows else None

    def renew(self, job_ids: list[str], worker: str, lease_until: float) -> set[str]:
        """Extend ``worker``'s lease on its running jobs. Returns the ones it should stop: a cancel
        was asked for (from any process), or the job is no longer its own (its lease ran out)."""
        if not job_ids:
            return set()
        marks = ", ".join("?" for _ in job_ids)
        with self._db.transaction() as db:
            db.execute(
                f"UPDATE jobs SET lease_until = ? WHERE {HELD} AND id IN ({marks})",
                (lease_until, *_held(worker), *job_ids),
            )
            rows = db.fetch_all(
                f"SELECT id FROM jobs WHERE {HELD} AND cancel_requested = 0 AND id IN ({marks})",
                (*_held(worker), *job_ids),
            )
        return set(job_ids) - {row["id"] for row in rows}

    def request_cancel(self, job_id: str) -> bool:
        """Ask the worker running the job, in whichever process, to stop it; False if it is not running."""
        changed = self._db.execute(
            "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = ?", (job_id, JobStatus.RUNNING)
        )
        return changed == 1

    def release(self, job_id: str, worker: str) -> bool:
        """Put ``worker``'s running job back in the queue (its worker is shutting down)."""
        changed = self._db.execute(
            f"UPDATE jobs SET status = ?, started_at = NULL, worker = NULL, lease_until = NULL WHERE id = ? AND {HELD}",
            (JobStatus.QUEUED, job_id, *_held(worker)),
        )
        return changed == 1

    def requeue_expired(self, now: float) -> list[Job]:
        """Running jobs whose lease ran out before ``now`` (their worker died) go back to the queue."""
        rows = self._db.fetch_all(
            "UPDATE jobs SET status = ?, started_at = NULL, worker = NULL, lease_until = NULL "
            "WHERE status = ? AND lease_until < ? RETURNING *",
            (JobStatus.QUEUED, JobStatus.RUNNING, now),
        )
        return sorted(_readable(rows), key=lambda job: job.created_at)

    def queued(self, model: str) -> list[str]:
        """The ids of ``model``'s queued jobs, next first."""
        rows = self._db.fetch_all(
            "SELECT id FROM jobs WHERE model = ? AND status = ? ORDER BY created_at, rowid", (model, JobStatus.QUEUED)
        )
        return [row["id"] for row in rows]

    def queued_count(self, model: str) -> int:
        row = self._db.fetch_one(
            "SELECT count(*) AS waiting FROM jobs WHERE model = ? AND status = ?", (model, JobStatus.QUEUED)
        )
        return 0 if row is None else int(row["waiting"])

    def position(self, job_id: str) -> int | None:
        """1 for the next job of its model to run; None when the job is not queued."""
        row = self._db.fetch_one(
            "SELECT count(*) AS ahead FROM jobs AS other, jobs AS job WHERE job.id = ? AND job.status = ? "
            "AND other.model = job.model AND other.status = ? "
            "AND (other.created_at < job.created_at "
            "OR (other.created_at = job.created_at AND other.rowid <= job.rowid))",
            (job_id, JobStatus.QUEUED, JobStatus.QUEUED),
        )
        count = 0 if row is None else int(row["ahead"])
        return count or None

    def mark_succeeded(
        self, job_id: str, outputs: list[OutputImage], usage: Usage, *, worker: str | None = None
    ) -> bool:
        """Running to succeeded (only if ``worker``, when given, still holds it); the job's usage is
        billed as it really was."""
        which, params = _finishing(worker, JobStatus.RUNNING)
        with self._db.transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, outputs = ?, usage = ?, lease_until = NULL "
                f"WHERE id = ? AND {which}",
                (
                    JobStatus.SUCCEEDED,
                    time.time(),
                    json.dumps([o.__dict__ for o in outputs]),
                    json.dumps(usage.to_json()),
                    job_id,
                    *params,
                ),
            )
            if changed:
                used = usage_rows.Used(
                    usage.input_megapixels, usage.output_megapixels, usage.steps, usage.images, usage.cost_usd
                )
                usage_rows.bill(db, job_id, used)
        return changed == 1

    def mark_failed(
        self,
        job_id: str,
        error_type: ErrorCode,
        message: str,
        *,
        retry_after: int | None = None,
        worker: str | None = None,
        moderated: Moderated | None = None,
    ) -> None:
        """A failed job is not billed: its reserved usage is released. ``retry_after``: when the
        failure said the same request may succeed (a busy provider). With ``worker``, only a job
        that worker still holds fails. ``moderated``: what a moderation refused, when that failed it."""
        which, params = _finishing(worker, JobStatus.QUEUED, JobStatus.RUNNING)
        with self._db.transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error_type = ?, error_message = ?, "
                f"error_retry_after = ?, error_moderated = ?, lease_until = NULL WHERE id = ? AND {which}",
                (JobStatus.FAILED, time.time(), error_type, message, retry_after, moderated, job_id, *params),
            )
            if changed:
                usage_rows.release(db, job_id)

    def mark_canceled(
        self, job_id: str, *, only_if: JobStatus, note: str | None = None, worker: str | None = None
    ) -> bool:
        """Cancel a job that is still ``only_if`` (not billed); False when its state had moved on, or
        when ``worker`` is given and no longer holds it (a job a worker holds is running).

        ``note`` says what the cancel could not undo; the job shows it as its error (type ``ErrorCode.CANCELED``).
        """
        which, params = _finishing(worker, only_if)
        with self._db.transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error_type = ?, error_message = ?, lease_until = NULL "
                f"WHERE id = ? AND {which}",
                (JobStatus.CANCELED, time.time(), None if note is None else ErrorCode.CANCELED, note, job_id, *params),
            )
            if changed:
                usage_rows.release(db, job_id)
        return changed == 1

    def requeue_unfinished(self) -> list[Job]:
        """After a restart: every queued or running job is queued again, oldest first."""
        self._db.execute(
            "UPDATE jobs SET status = ?, started_at = NULL, worker = NULL, lease_until = NULL WHERE status = ?",
            (JobStatus.QUEUED, JobStatus.RUNNING),
        )
        rows = self._db.fetch_all("SELECT * FROM jobs WHERE status = ? ORDER BY created_at, rowid", (JobStatus.QUEUED,))
        return _readable(rows)


def _cursor(row: Row) -> str:
    raw = f"{row['created_at']!r}:{row['row_number']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[float, int]:
    """The position a cursor of :func:`_cursor` names; anything else (an edited one) is a 400, never a 500."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, rowid = raw.split(":")
        return (
            parse_float(created_at, param="cursor", low=0, high=MAX_WHOLE),
            parse_int(rowid, param="cursor", low=0, high=MAX_WHOLE),
        )
    except (ValueError, binascii.Error, InvalidRequest):
        message = "cursor is not one this server gave out; send next_cursor as it came"
        raise InvalidRequest(message, param="cursor") from None


def _readable(rows: list[Row]) -> list[Job]:
    """The jobs of ``rows``; a row that cannot be read is left out and logged, never failing the list."""
    jobs = []
    for row in rows:
        try:
            jobs.append(_job(row))
        except Exception as error:
            log.error(
                "job %s: its stored record cannot be read (%s: %s); left out", row["id"], type(error).__name__, error
            )
    return jobs


def _moderated(value: str | None) -> Moderated | None:
    """What a moderation refused; a value this version does not know reads as not known."""
    try:
        return None if value is None else Moderated(value)
    except ValueError:
        return None


def _text(value: str | None) -> str | None:
    return None if value is None else mend(value)


def _job(row: Row) -> Job:
    """A row as a job. Text stored before invalid Unicode was refused is mended (U+FFFD) so it can be shown."""
    usage = json.loads(row["usage"]) if row["usage"] else None
    return Job(
        id=row["id"],
        spec=JobSpec.from_json(mend(json.loads(row["spec"]))),
        status=JobStatus(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error_type=ErrorCode.stored(row["error_type"]),
        error_message=_text(row["error_message"]),
        error_retry_after=row["error_retry_after"],
        error_moderated=_moderated(row["error_moderated"]),
        outputs=[OutputImage(**o) for o in json.loads(row["outputs"])],
        usage=Usage(**usage) if usage else None,
        attempts=row["attempts"],
        webhook=WebhookTarget.from_json(mend(json.loads(row["webhook"]))) if row["webhook"] else None,
        idempotency_key=_text(row["idempotency_key"]),
        owner=row["owner"],
    )
