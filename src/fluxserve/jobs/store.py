"""The durable job store: SQLite in the data directory, schema versioned by migrations.

One connection guarded by a lock serves every thread; each call is a short transaction.
``synchronous=FULL`` with WAL: a job the store has accepted survives a kill -9 or a power cut.
The folder is made ``0700`` and the database ``0600`` (SQLite gives its ``-wal`` and ``-shm``
files the database's mode): it holds key hashes, prompts and webhook URLs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxserve.errors import ErrorCode, InvalidRequest
from fluxserve.jobs.models import Job, JobSpec, JobStatus, OutputImage, Usage, WebhookTarget
from fluxserve.jsonvalues import mend
from fluxserve.numbers import MAX_WHOLE, parse_float, parse_int
from fluxserve.storage.private import private_dir, private_file, tighten

log = logging.getLogger("fluxserve.jobs")

# Each entry moves the schema one version forward. Never edit one that has shipped: add another.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        status TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        error_type TEXT,
        error_message TEXT,
        outputs TEXT NOT NULL DEFAULT '[]',
        usage TEXT,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_by_status ON jobs (status, created_at);
    CREATE INDEX jobs_by_created ON jobs (created_at);
    """,
    """
    ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
    ALTER TABLE jobs ADD COLUMN request_hash TEXT;
    ALTER TABLE jobs ADD COLUMN webhook TEXT;
    CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_by_model ON jobs (model, created_at);
    CREATE INDEX jobs_by_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL,
        event TEXT NOT NULL,
        url TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        last_status_code INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL,
        delivered_at REAL
    );
    CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries (job_id, created_at);
    CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, next_attempt_at);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        prefix TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        rpm INTEGER,
        concurrency INTEGER,
        quota_megapixels REAL,
        quota_period TEXT,
        expires_at REAL,
        created_at REAL NOT NULL,
        revoked_at REAL,
        last_used_at REAL
    );
    ALTER TABLE jobs ADD COLUMN owner TEXT;
    DROP INDEX jobs_by_idempotency_key;
    CREATE UNIQUE INDEX jobs_by_owner_and_idempotency_key ON jobs (ifnull(owner, ''), idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_by_owner ON jobs (owner, created_at);
    CREATE TABLE usage (
        job_id TEXT PRIMARY KEY,
        key_id TEXT,
        model TEXT NOT NULL,
        at REAL NOT NULL,
        input_megapixels REAL NOT NULL,
        output_megapixels REAL NOT NULL,
        steps INTEGER NOT NULL,
        images INTEGER NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX usage_by_key ON usage (key_id, at);
    """,
    """
    ALTER TABLE usage ADD COLUMN cost_usd REAL;
    """,
    """
    ALTER TABLE jobs ADD COLUMN error_retry_after INTEGER;
    """,
)


DATABASE_FILE = "jobs.sqlite3"
"""The database's name in the data directory."""
SIDECARS = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside the database, named after it."""


@dataclass(frozen=True)
class Idempotency:
    """A client's ``Idempotency-Key`` and a digest of what it sent with it."""

    key: str
    request_hash: str


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: str | None


class JobStore:
    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        private_file(path)
        for suffix in SIDECARS:
            tighten(path.with_name(path.name + suffix))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            self._db.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {version}; COMMIT;")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement; return how many rows it changed."""
        with self._lock:
            return self._db.execute(sql, params).rowcount

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Several statements as one: all of them happen, or none."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def fetch_all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def fetch_one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
            return row

    def next_boot(self) -> int:
        """Count this process's start: event ids begin with it, so a restart never reuses one."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'boot'").fetchone()
            boot = 1 if row is None else int(row[0]) + 1
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('boot', ?)", (str(boot),))
            self._db.execute("COMMIT")
            return boot

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
        with self.transaction() as db:
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
            db.execute(
                "INSERT INTO usage (job_id, key_id, model, at, input_megapixels, output_megapixels, steps, images, "
                "state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'reserved')",
                (
                    job_id,
                    owner,
                    spec.model,
                    now if charged_at is None else charged_at,
                    spec.input_megapixels,
                    round(spec.megapixels - spec.input_megapixels, 4),
                    spec.steps * spec.n,
                    spec.n,
                ),
            )
        return Job(
            job_id,
            spec,
            JobStatus.QUEUED,
            now,
            webhook=webhook,
            idempotency_key=None if idempotency is None else idempotency.key,
            owner=owner,
        )

    def get(self, job_id: str) -> Job | None:
        row = self.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _job(row)

    def by_idempotency_key(self, key: str, owner: str | None = None) -> tuple[Job, str] | None:
        """The job ``owner`` made with ``key``, and the digest of the request that made it."""
        row = self.fetch_one(
            "SELECT * FROM jobs WHERE ifnull(owner, '') = ? AND idempotency_key = ?", (owner or "", key)
        )
        return None if row is None else (_job(row), row["request_hash"])

    def recent(self, limit: int = 50, owner: str | None = None) -> list[Job]:
        """The newest jobs first."""
        return self.page(limit=limit, owner=owner).jobs

    def unfinished(self, owner: str) -> int:
        """How many of ``owner``'s jobs are queued or running."""
        row = self.fetch_one(
            "SELECT count(*) FROM jobs WHERE owner = ? AND status IN (?, ?)",
            (owner, JobStatus.QUEUED, JobStatus.RUNNING),
        )
        return 0 if row is None else int(row[0])

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
        where: list[str] = ["owner IS ?"]
        params: list[Any] = [owner]
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
        rows = self.fetch_all(sql, (*params, limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _cursor(rows[-1]) if more else None
        return Page(_readable(rows), next_cursor)

    def finished_before(self, cutoff: float, limit: int = 500) -> list[str]:
        """Ids of jobs that finished before ``cutoff`` (a time.time() value), oldest first."""
        rows = self.fetch_all(
            "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? ORDER BY finished_at LIMIT ?",
            (cutoff, limit),
        )
        return [row["id"] for row in rows]

    def delete(self, job_id: str) -> bool:
        """Remove a finished job's record and its webhook deliveries (its usage stays); False if not finished."""
        with self.transaction() as db:
            removed = db.execute(
                "DELETE FROM jobs WHERE id = ? AND status IN (?, ?, ?)",
                (job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED),
            ).rowcount
            if removed:
                db.execute("DELETE FROM webhook_deliveries WHERE job_id = ?", (job_id,))
        return removed == 1

    def mark_running(self, job_id: str) -> bool:
        """Queued to running; False when the job is no longer queued (canceled meanwhile)."""
        return (
            self.execute(
                "UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1 WHERE id = ? AND status = ?",
                (JobStatus.RUNNING, time.time(), job_id, JobStatus.QUEUED),
            )
            == 1
        )

    def mark_succeeded(self, job_id: str, outputs: list[OutputImage], usage: Usage) -> bool:
        """Running to succeeded; the job's usage is billed as it really was."""
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, outputs = ?, usage = ? WHERE id = ? AND status = ?",
                (
                    JobStatus.SUCCEEDED,
                    time.time(),
                    json.dumps([o.__dict__ for o in outputs]),
                    json.dumps(usage.to_json()),
                    job_id,
                    JobStatus.RUNNING,
                ),
            ).rowcount
            if changed:
                db.execute(
                    "UPDATE usage SET input_megapixels = ?, output_megapixels = ?, steps = ?, images = ?, "
                    "cost_usd = ?, state = 'billed' WHERE job_id = ?",
                    (
                        usage.input_megapixels,
                        usage.output_megapixels,
                        usage.steps,
                        usage.images,
                        usage.cost_usd,
                        job_id,
                    ),
                )
        return changed == 1

    def mark_failed(self, job_id: str, error_type: ErrorCode, message: str, *, retry_after: int | None = None) -> None:
        """A failed job is not billed: its reserved usage is released. ``retry_after``: when the
        failure said the same request may succeed (a busy provider)."""
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error_type = ?, error_message = ?, "
                "error_retry_after = ? WHERE id = ? AND status IN (?, ?)",
                (
                    JobStatus.FAILED,
                    time.time(),
                    error_type,
                    message,
                    retry_after,
                    job_id,
                    JobStatus.QUEUED,
                    JobStatus.RUNNING,
                ),
            ).rowcount
            if changed:
                db.execute("UPDATE usage SET state = 'released' WHERE job_id = ?", (job_id,))

    def mark_canceled(self, job_id: str, *, only_if: JobStatus, note: str | None = None) -> bool:
        """Cancel a job that is still ``only_if`` (not billed); False when its state had moved on.

        ``note`` says what the cancel could not undo; the job shows it as its error (type ``ErrorCode.CANCELED``).
        """
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error_type = ?, error_message = ? "
                "WHERE id = ? AND status = ?",
                (JobStatus.CANCELED, time.time(), None if note is None else ErrorCode.CANCELED, note, job_id, only_if),
            ).rowcount
            if changed:
                db.execute("UPDATE usage SET state = 'released' WHERE job_id = ?", (job_id,))
        return changed == 1

    def requeue_unfinished(self) -> list[Job]:
        """After a restart: every queued or running job is queued again, oldest first."""
        self.execute(
            "UPDATE jobs SET status = ?, started_at = NULL WHERE status = ?", (JobStatus.QUEUED, JobStatus.RUNNING)
        )
        rows = self.fetch_all("SELECT * FROM jobs WHERE status = ? ORDER BY created_at, rowid", (JobStatus.QUEUED,))
        return _readable(rows)


def _cursor(row: sqlite3.Row) -> str:
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


def _readable(rows: list[sqlite3.Row]) -> list[Job]:
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


def _text(value: str | None) -> str | None:
    return None if value is None else mend(value)


def _job(row: sqlite3.Row) -> Job:
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
        outputs=[OutputImage(**o) for o in json.loads(row["outputs"])],
        usage=Usage(**usage) if usage else None,
        attempts=row["attempts"],
        webhook=WebhookTarget.from_json(mend(json.loads(row["webhook"]))) if row["webhook"] else None,
        idempotency_key=_text(row["idempotency_key"]),
        owner=row["owner"],
    )
