"""Usage per key: what quotas count, and the per-day report of GET /v1/usage and ``keys usage``.

Every job has one usage row, made when it is queued (``reserved``), then ``billed`` with what it
really used when it succeeds, or ``released`` (not billed) when it fails or is canceled. Reserved
rows count against a quota, so that jobs queued together cannot overrun it. Rows outlive their
jobs: deleting a job does not give its megapixels back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fluxserve.db import Database, Statements


@dataclass(frozen=True)
class Used:
    """What one job used (or, while it waits, is expected to use)."""

    input_megapixels: float
    output_megapixels: float
    steps: int
    images: int
    cost_usd: float | None = None


def reserve(db: Statements, job_id: str, key_id: str | None, model: str, at: float, used: Used) -> None:
    """A queued job's row, counted against its key's quota until it ends (call inside its transaction)."""
    db.execute(
        "INSERT INTO usage (job_id, key_id, model, at, input_megapixels, output_megapixels, steps, images, "
        "state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'reserved')",
        (job_id, key_id, model, at, used.input_megapixels, used.output_megapixels, used.steps, used.images),
    )


def bill(db: Statements, job_id: str, used: Used) -> None:
    """A succeeded job's row, with what it really used."""
    db.execute(
        "UPDATE usage SET input_megapixels = ?, output_megapixels = ?, steps = ?, images = ?, "
        "cost_usd = ?, state = 'billed' WHERE job_id = ?",
        (used.input_megapixels, used.output_megapixels, used.steps, used.images, used.cost_usd, job_id),
    )


def release(db: Statements, job_id: str) -> None:
    """A failed or canceled job is not billed: its reservation no longer counts."""
    db.execute("UPDATE usage SET state = 'released' WHERE job_id = ?", (job_id,))


@dataclass(frozen=True)
class DailyUsage:
    key_id: str | None
    day: str  # YYYY-MM-DD, UTC
    model: str
    jobs: int
    images: int
    steps: int
    input_megapixels: float
    output_megapixels: float
    cost_usd: float | None = None
    """Summed over the jobs whose provider reported a cost; None when none did."""

    @property
    def megapixels(self) -> float:
        return round(self.input_megapixels + self.output_megapixels, 4)

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "day": self.day,
            "model": self.model,
            "jobs": self.jobs,
            "images": self.images,
            "steps": self.steps,
            "input_megapixels": round(self.input_megapixels, 4),
            "output_megapixels": round(self.output_megapixels, 4),
            "megapixels": self.megapixels,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }


def megapixels_since(store: Database, key_id: str, since: float) -> float:
    """Input plus output megapixels ``key_id`` has used or reserved since ``since``."""
    row = store.fetch_one(
        "SELECT coalesce(sum(input_megapixels + output_megapixels), 0) AS used FROM usage "
        "WHERE key_id = ? AND at >= ? AND state != 'released'",
        (key_id, since),
    )
    return 0.0 if row is None else float(row["used"])


def daily_usage(
    store: Database, *, since: float, key_id: str | None = None, every_key: bool = False
) -> list[DailyUsage]:
    """Billed usage per key, day (UTC) and model since ``since``, oldest day first.

    ``every_key`` reports all keys (and work done without a key); otherwise only ``key_id``'s.
    """
    where = "state = 'billed' AND at >= ?"
    params: list[Any] = [since]
    if not every_key and key_id is None:
        where += " AND key_id IS NULL"
    elif not every_key:
        where += " AND key_id = ?"
        params.append(key_id)
    day = store.dialect.utc_day("at")
    rows = store.fetch_all(
        f"SELECT key_id, {day} AS day, model, count(*) AS jobs, sum(images) AS images, "
        "sum(steps) AS steps, sum(input_megapixels) AS input_mp, sum(output_megapixels) AS output_mp, "
        "sum(cost_usd) AS cost_usd "
        f"FROM usage WHERE {where} GROUP BY key_id, {day}, model ORDER BY day, key_id, model",
        tuple(params),
    )
    return [
        DailyUsage(
            row["key_id"],
            row["day"],
            row["model"],
            row["jobs"],
            row["images"],
            row["steps"],
            row["input_mp"],
            row["output_mp"],
            row["cost_usd"],
        )
        for row in rows
    ]


class UsageReports:
    """Read-only reports over the usage table, for the API and the CLI."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def daily(self, *, since: float, key_id: str | None = None, every_key: bool = False) -> list[DailyUsage]:
        """See :func:`daily_usage`."""
        return daily_usage(self._db, since=since, key_id=key_id, every_key=every_key)

    def megapixels_since(self, key_id: str, since: float) -> float:
        """See :func:`megapixels_since`."""
        return megapixels_since(self._db, key_id, since)


def start_of_day(days_back: int, now: float) -> float:
    """Midnight UTC ``days_back`` days before today (0: today)."""
    today = datetime.fromtimestamp(now, UTC).date()
    return datetime.fromordinal(today.toordinal() - days_back).replace(tzinfo=UTC).timestamp()
