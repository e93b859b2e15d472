"""The SQLite database: one file in the data directory, its connection, transactions and migrations.

The default database, with nothing to run. One connection guarded by a lock serves every thread;
each call is a short transaction. ``synchronous=FULL`` with WAL: what the database has accepted
survives a kill -9 or a power cut. The file and its folder are the owner's alone. The schema
version is SQLite's ``user_version``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fluxserve.db.dialects import SQLITE, Dialect
from fluxserve.db.protocol import Row, count_boot
from fluxserve.storage.private import private_dir, private_file, tighten

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
    # A job's webhook deliveries go with it: the schema says so, so no repository deletes another's rows.
    """
    CREATE TRIGGER jobs_take_their_deliveries AFTER DELETE ON jobs BEGIN
        DELETE FROM webhook_deliveries WHERE job_id = OLD.id;
    END;
    """,
    # The LoRA adapters a key may use: a JSON list of names; NULL (every key made before) is all of them.
    """
    ALTER TABLE api_keys ADD COLUMN loras TEXT;
    """,
    # Workers claim queued jobs and hold them on a lease they renew; a cancel may come from any process.
    """
    ALTER TABLE jobs ADD COLUMN worker TEXT;
    ALTER TABLE jobs ADD COLUMN lease_until REAL;
    ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_queue ON jobs (model, status, created_at);
    CREATE INDEX jobs_by_lease ON jobs (lease_until) WHERE status = 'running';
    """,
    # Postgres's version 9 adds job_events, which carries job events between the processes that share a
    # database. One process owns a SQLite file and hears its own events: nothing to add, only the number.
    """
    SELECT 1;
    """,
    # A moderation_blocked job says what was refused: its input or its output (BFL reports them apart).
    """
    ALTER TABLE jobs ADD COLUMN error_moderated TEXT;
    """,
    # A pending webhook delivery is held by one process's sender on a lease it renews (fluxserve.webhooks
    # .deliveries), as a running job is by its worker; one whose sender died is taken over when it runs out.
    """
    ALTER TABLE webhook_deliveries ADD COLUMN sender TEXT;
    ALTER TABLE webhook_deliveries ADD COLUMN lease_until REAL;
    CREATE INDEX webhook_deliveries_by_sender ON webhook_deliveries (sender) WHERE status = 'pending';
    """,
)


DATABASE_FILE = "jobs.sqlite3"
"""The database's name in the data directory."""
SIDECARS = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside the database, named after it."""


class _Connection:
    """The statements of one connection, used under the database's lock."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, params).rowcount

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, params).fetchall()

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._db.execute(sql, params).fetchone()
        return row


class SqliteDatabase:
    """One SQLite connection for the whole server, guarded by a lock; each call is a short transaction."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        private_file(path)
        for suffix in SIDECARS:
            tighten(path.with_name(path.name + suffix))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._statements = _Connection(self._db)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()

    @property
    def dialect(self) -> Dialect:
        return SQLITE

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

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return how many rows it changed."""
        with self._lock:
            return self._statements.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        """Several statements as one: all of them happen, or none."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._statements
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            return self._statements.fetch_all(sql, params)

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with self._lock:
            return self._statements.fetch_one(sql, params)

    def listen(self, channel: str) -> None:
        """One process owns the file: nobody else sends notices."""
        return None

    def next_boot(self) -> int:
        """Count this process's start: event ids begin with it, so a restart never reuses one."""
        with self.transaction() as statements:
            return count_boot(statements)
