"""The Postgres schema, in versions that match SQLite's (:data:`fluxserve.db.sqlite.MIGRATIONS`).

A Postgres database starts at version 7, SQLite's seventh migration: the same tables, columns,
indexes and cascade in one step. A later change is one more entry in both lists, with the same
version (SQLite's may do nothing: version 9's events table serves processes sharing a database).
Timestamps are ``DOUBLE PRECISION`` (``REAL`` is 4 bytes in Postgres: seconds would be rounded to
minutes) and whole numbers ``BIGINT`` (SQLite's integers are 64-bit). ``rowid`` is the order rows
were made in, as SQLite's own ``rowid`` is, so the repositories' SQL is the same on both.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        7,
        """
        CREATE TABLE jobs (
            rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            status TEXT NOT NULL,
            spec TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            error_type TEXT,
            error_message TEXT,
            outputs TEXT NOT NULL DEFAULT '[]',
            usage TEXT,
            attempts BIGINT NOT NULL DEFAULT 0,
            idempotency_key TEXT,
            request_hash TEXT,
            webhook TEXT,
            owner TEXT,
            error_retry_after BIGINT
        );
        CREATE INDEX jobs_by_status ON jobs (status, created_at);
        CREATE INDEX jobs_by_created ON jobs (created_at);
        CREATE INDEX jobs_by_model ON jobs (model, created_at);
        CREATE INDEX jobs_by_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
        CREATE UNIQUE INDEX jobs_by_owner_and_idempotency_key ON jobs (coalesce(owner, ''), idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX jobs_by_owner ON jobs (owner, created_at);

        CREATE TABLE webhook_deliveries (
            rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            event TEXT NOT NULL,
            url TEXT NOT NULL,
            payload TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts BIGINT NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION,
            last_status_code BIGINT,
            last_error TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            delivered_at DOUBLE PRECISION
        );
        CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries (job_id, created_at);
        CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, next_attempt_at);

        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

        CREATE TABLE api_keys (
            rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            id TEXT PRIMARY KEY,
            prefix TEXT NOT NULL UNIQUE,
            hash TEXT NOT NULL,
            name TEXT NOT NULL,
            scope TEXT NOT NULL,
            rpm BIGINT,
            concurrency BIGINT,
            quota_megapixels DOUBLE PRECISION,
            quota_period TEXT,
            expires_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION,
            last_used_at DOUBLE PRECISION,
            loras TEXT
        );

        CREATE TABLE usage (
            job_id TEXT PRIMARY KEY,
            key_id TEXT,
            model TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            input_megapixels DOUBLE PRECISION NOT NULL,
            output_megapixels DOUBLE PRECISION NOT NULL,
            steps BIGINT NOT NULL,
            images BIGINT NOT NULL,
            state TEXT NOT NULL,
            cost_usd DOUBLE PRECISION
        );
        CREATE INDEX usage_by_key ON usage (key_id, at);

        -- A job's webhook deliveries go with it, as SQLite's trigger of the same name does.
        CREATE FUNCTION jobs_take_their_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM webhook_deliveries WHERE job_id = OLD.id;
            RETURN OLD;
        END;
        $$;
        CREATE TRIGGER jobs_take_their_deliveries AFTER DELETE ON jobs
            FOR EACH ROW EXECUTE FUNCTION jobs_take_their_deliveries();
        """,
    ),
    (
        8,
        """
        ALTER TABLE jobs ADD COLUMN worker TEXT;
        ALTER TABLE jobs ADD COLUMN lease_until DOUBLE PRECISION;
        ALTER TABLE jobs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
        CREATE INDEX jobs_queue ON jobs (model, status, created_at);
        CREATE INDEX jobs_by_lease ON jobs (lease_until) WHERE status = 'running';
        """,
    ),
    (
        9,
        """
        -- Jobs' events, shared by the processes on this database (fluxserve.jobs.relay): lifecycle and
        -- progress as small JSON, never image bytes. seq orders them and is their id in every process.
        CREATE TABLE job_events (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job_id TEXT NOT NULL,
            type TEXT NOT NULL,
            origin BIGINT NOT NULL,
            origin_seq BIGINT NOT NULL,
            data TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX job_events_by_job ON job_events (job_id, seq);

        -- A job's events go with it, as its webhook deliveries do.
        CREATE FUNCTION jobs_take_their_events() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM job_events WHERE job_id = OLD.id;
            RETURN OLD;
        END;
        $$;
        CREATE TRIGGER jobs_take_their_events AFTER DELETE ON jobs
            FOR EACH ROW EXECUTE FUNCTION jobs_take_their_events();
        """,
    ),
    (
        10,
        """
        -- A moderation_blocked job says what was refused: its input or its output.
        ALTER TABLE jobs ADD COLUMN error_moderated TEXT;
        """,
    ),
    (
        11,
        """
        -- A pending webhook delivery is held by one process's sender on a lease, as a running job is.
        ALTER TABLE webhook_deliveries ADD COLUMN sender TEXT;
        ALTER TABLE webhook_deliveries ADD COLUMN lease_until DOUBLE PRECISION;
        CREATE INDEX webhook_deliveries_by_sender ON webhook_deliveries (sender) WHERE status = 'pending';
        """,
    ),
)
