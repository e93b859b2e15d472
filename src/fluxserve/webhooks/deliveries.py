"""The ``webhook_deliveries`` table: one row per event to post, kept from before its first attempt.

A row is ``pending`` until an attempt is answered 2xx (``delivered``) or the retries are over
(``failed``); pending rows are what a restarted sender resumes. The table is made by the
database's migrations (a job's deliveries are deleted with it) and shares the database.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from fluxserve.db import Statements
from fluxserve.jobs.models import DeliveryStatus
from fluxserve.jobs.views import WebhookDeliveryView
from fluxserve.webhooks.retries import Step


@dataclass(frozen=True)
class Delivery:
    """What an attempt needs of a pending delivery."""

    id: str
    url: str
    payload: str
    attempts: int
    job_id: str = ""
    event: str = ""
    bfl_secret: str | None = None
    """The client's webhook_secret, for a job submitted through BFL's API that sent one."""


def new_delivery_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


class Deliveries:
    def __init__(self, db: Statements) -> None:
        self._db = db

    def add(self, job_id: str, event: str, url: str, payload: str, at: float) -> str:
        """Record a pending delivery, due at ``at``; return its id (the ``webhook-id`` of every attempt)."""
        delivery_id = new_delivery_id()
        self._db.execute(
            "INSERT INTO webhook_deliveries (id, job_id, event, url, payload, status, attempts, next_attempt_at, "
            "created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
            (delivery_id, job_id, event, url, payload, at, at),
        )
        return delivery_id

    def pending(self) -> list[tuple[float, str]]:
        """(due time, id) of every pending delivery, oldest first."""
        rows = self._db.fetch_all(
            "SELECT id, next_attempt_at, created_at FROM webhook_deliveries WHERE status = 'pending' "
            "ORDER BY created_at, rowid"
        )
        return [(row["next_attempt_at"] or row["created_at"], row["id"]) for row in rows]

    def load(self, delivery_id: str) -> Delivery | None:
        """The delivery if it is still pending; None once settled or deleted with its job."""
        row = self._db.fetch_one(
            "SELECT d.id, d.url, d.payload, d.attempts, d.job_id, d.event, j.webhook FROM webhook_deliveries d "
            "JOIN jobs j ON j.id = d.job_id WHERE d.id = ? AND d.status = 'pending'",
            (delivery_id,),
        )
        if row is None:
            return None
        target = json.loads(row["webhook"]) if row["webhook"] else {}
        secret = target.get("secret") if target.get("shape") == "bfl" else None
        return Delivery(row["id"], row["url"], row["payload"], row["attempts"], row["job_id"], row["event"], secret)

    def record(self, delivery_id: str, number: int, status_code: int | None, step: Step, now: float) -> None:
        """Record attempt ``number`` and the step that follows it."""
        self._db.execute(
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, last_status_code = ?, "
            "last_error = ?, delivered_at = ? WHERE id = ? AND status = 'pending'",
            (
                step.status,
                number,
                step.next_attempt_at,
                status_code,
                step.error,
                now if step.status is DeliveryStatus.DELIVERED else None,
                delivery_id,
            ),
        )

    def of_job(self, job_id: str) -> list[WebhookDeliveryView]:
        """The deliveries of a job, oldest first, as recorded."""
        rows = self._db.fetch_all(
            "SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY created_at, rowid", (job_id,)
        )
        return [
            WebhookDeliveryView(
                id=row["id"],
                event=row["event"],
                status=row["status"],
                attempts=row["attempts"],
                last_status_code=row["last_status_code"],
                last_error=row["last_error"],
                created_at=row["created_at"],
                delivered_at=row["delivered_at"],
            )
            for row in rows
        ]
