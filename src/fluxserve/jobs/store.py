"""The durable job store: SQLite in the data directory, schema versioned by migrations.

One connection guarded by a lock serves every thread; each call is a short transaction.
``synchronous=FULL`` with WAL: a job the store has accepted survives a kill -9 or a power cut.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fluxserve.jobs.models import Job, JobSpec, JobStatus, OutputImage, Usage

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
)


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
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

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    def create(self, job_id: str, spec: JobSpec) -> Job:
        now = time.time()
        self._execute(
            "INSERT INTO jobs (id, model, status, spec, created_at) VALUES (?, ?, ?, ?, ?)",
            (job_id, spec.model, JobStatus.QUEUED, json.dumps(spec.to_json()), now),
        )
        return Job(job_id, spec, JobStatus.QUEUED, now)

    def get(self, job_id: str) -> Job | None:
        row = self._execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs first."""
        rows = self._execute("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)).fetchall()
        return [_job(row) for row in rows]

    def mark_running(self, job_id: str) -> bool:
        """Queued to running; False when the job is no longer queued (canceled meanwhile)."""
        cursor = self._execute(
            "UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1 WHERE id = ? AND status = ?",
            (JobStatus.RUNNING, time.time(), job_id, JobStatus.QUEUED),
        )
        return cursor.rowcount == 1

    def mark_succeeded(self, job_id: str, outputs: list[OutputImage], usage: Usage) -> bool:
        cursor = self._execute(
            "UPDATE jobs SET status = ?, finished_at = ?, outputs = ?, usage = ? WHERE id = ? AND status = ?",
            (
                JobStatus.SUCCEEDED,
                time.time(),
                json.dumps([o.__dict__ for o in outputs]),
                json.dumps(usage.to_json()),
                job_id,
                JobStatus.RUNNING,
            ),
        )
        return cursor.rowcount == 1

    def mark_failed(self, job_id: str, error_type: str, message: str) -> None:
        self._execute(
            "UPDATE jobs SET status = ?, finished_at = ?, error_type = ?, error_message = ? "
            "WHERE id = ? AND status IN (?, ?)",
            (JobStatus.FAILED, time.time(), error_type, message, job_id, JobStatus.QUEUED, JobStatus.RUNNING),
        )

    def mark_canceled(self, job_id: str, *, only_if: JobStatus) -> bool:
        """Cancel a job that is still ``only_if``; False when its state had moved on."""
        cursor = self._execute(
            "UPDATE jobs SET status = ?, finished_at = ? WHERE id = ? AND status = ?",
            (JobStatus.CANCELED, time.time(), job_id, only_if),
        )
        return cursor.rowcount == 1

    def requeue_unfinished(self) -> list[Job]:
        """After a restart: every queued or running job is queued again, oldest first."""
        self._execute(
            "UPDATE jobs SET status = ?, started_at = NULL WHERE status = ?", (JobStatus.QUEUED, JobStatus.RUNNING)
        )
        rows = self._execute(
            "SELECT * FROM jobs WHERE status = ? ORDER BY created_at, rowid", (JobStatus.QUEUED,)
        ).fetchall()
        return [_job(row) for row in rows]


def _job(row: sqlite3.Row) -> Job:
    usage = json.loads(row["usage"]) if row["usage"] else None
    return Job(
        id=row["id"],
        spec=JobSpec.from_json(json.loads(row["spec"])),
        status=JobStatus(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        outputs=[OutputImage(**o) for o in json.loads(row["outputs"])],
        usage=Usage(**usage) if usage else None,
        attempts=row["attempts"],
    )
