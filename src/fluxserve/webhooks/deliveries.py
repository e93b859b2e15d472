"""The ``webhook_deliveries`` table: one row per event to post, kept from before its first attempt.

A row is ``pending`` until an attempt is answered 2xx (``delivered``) or the retries are over
(``failed``). The table is made by the database's migrations (a job's deliveries are deleted with
it) and shares the database.

A pending row is held by one sender (``sender``, unique to a process's sender) until
``lease_until``, which that sender renews while the row is in its schedule; a sender attempts only
the rows it holds. Rows nobody holds (left by a sender that stopped) and rows whose lease ran out
(their sender died) are taken by whichever sender claims them first (``FOR UPDATE SKIP LOCKED`` on
Postgres), keeping their attempt count and next-attempt time. Where one process owns the database
(SQLite), a starting sender takes every pending row: whoever held them before is gone.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from fluxserve.db import Database
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


@dataclass(frozen=True)
class Hold:
    """A sender's hold on deliveries: who holds them, and until when unless renewed."""

    sender: str
    until: float


def new_delivery_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


HELD = "status = 'pending' AND sender = ?"
"""The rows a sender holds (its one parameter): pending and claimed by it, whether or not the lease
has run out meanwhile (until another sender claims one, it is still this sender's)."""


@dataclass(frozen=True, order=True)
class Due:
    """A delivery a sender has claimed, and when its next attempt is due."""

    at: float
    id: str


class Deliveries:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, job_id: str, event: str, url: str, payload: str, at: float, *, held: Hold | None = None) -> str:
        """Record a pending delivery, due at ``at`` and held as ``held`` says (by nobody when None);
        return its id (the ``webhook-id`` of every attempt)."""
        delivery_id = new_delivery_id()
        self._db.execute(
            "INSERT INTO webhook_deliveries (id, job_id, event, url, payload, status, attempts, next_attempt_at, "
            "created_at, sender, lease_until) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
            (
                delivery_id,
                job_id,
                event,
                url,
                payload,
                at,
                at,
                None if held is None else held.sender,
                None if held is None else held.until,
            ),
        )
        return delivery_id

    def claim(self, hold: Hold, now: float, *, every: bool = False) -> list[Due]:
        """Take for ``hold.sender`` the pending deliveries nobody holds or whose lease ran out before
        ``now`` (``every``: all pending ones, held or not); when each is due, in order.

        One statement picks and takes them, so two senders never take the same one.
        """
        free = "" if every else " AND (sender IS NULL OR lease_until IS NULL OR lease_until < ?)"
        rows = self._db.fetch_all(
            "UPDATE webhook_deliveries SET sender = ?, lease_until = ? WHERE id IN (SELECT id FROM webhook_deliveries "
            f"WHERE status = 'pending'{free} ORDER BY created_at, rowid{self._db.dialect.skip_locked}) "
            "RETURNING id, next_attempt_at, created_at",
            (hold.sender, hold.until) if every else (hold.sender, hold.until, now),
        )
        return sorted(Due(row["next_attempt_at"] or row["created_at"], row["id"]) for row in rows)

    def renew(self, hold: Hold) -> int:
        """Extend ``hold.sender``'s lease on every delivery it holds to ``hold.until``; how many it holds."""
        return self._db.execute(
            f"UPDATE webhook_deliveries SET lease_until = ? WHERE {HELD}", (hold.until, hold.sender)
        )

    def release(self, sender: str) -> int:
        """Let go of every delivery ``sender`` holds (it is stopping): any sender may take them now."""
        return self._db.execute(
            f"UPDATE webhook_deliveries SET sender = NULL, lease_until = NULL WHERE {HELD}", (sender,)
        )

    def hold(self, delivery_id: str, hold: Hold) -> Delivery | None:
        """The delivery, its lease extended to ``hold.until``, while it is pending and ``hold.sender``
        holds it; None once settled, deleted with its job, or taken by another sender."""
        with self._db.transaction() as db:
            extended = db.execute(
                f"UPDATE webhook_deliveries SET lease_until = ? WHERE id = ? AND {HELD}",
                (hold.until, delivery_id, hold.sender),
            )
            if extended != 1:
                return None
            row = db.fetch_one(
                "SELECT d.id, d.url, d.payload, d.attempts, d.job_id, d.event, j.webhook FROM webhook_deliveries d "
                "JOIN jobs j ON j.id = d.job_id WHERE d.id = ?",
                (delivery_id,),
            )
        if row is None:
            return None
        target = json.loads(row["webhook"]) if row["webhook"] else {}
        secret = target.get("secret") if target.get("shape") == "bfl" else None
        return Delivery(row["id"], row["url"], row["payload"], row["attempts"], row["job_id"], row["event"], secret)

    def record(
        self, delivery_id: str, sender: str, number: int, status_code: int | None, step: Step, now: float
    ) -> bool:
        """Record attempt ``number`` and the step that follows it; False (nothing recorded) when
        ``sender`` no longer holds the delivery."""
        lease = "lease_until" if step.status is DeliveryStatus.PENDING else "NULL"  # a settled row is held no more
        changed = self._db.execute(
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, last_status_code = ?, "
            f"last_error = ?, delivered_at = ?, lease_until = {lease} WHERE id = ? AND {HELD}",
            (
                step.status,
                number,
                step.next_attempt_at,
                status_code,
                step.error,
                now if step.status is DeliveryStatus.DELIVERED else None,
                delivery_id,
                sender,
            ),
        )
        return changed == 1

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
