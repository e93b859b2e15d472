"""The few SQL expressions SQLite and Postgres spell differently, in one place.

Everything else the repositories write runs on both as it is. An expression that an index is
built on is spelled here exactly as that database's migration spells it, so lookups use the index.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str
    _or_empty: str
    _utc_day: str
    skip_locked: str
    """Appended to a ``SELECT`` that picks rows to take: other transactions' locked rows are passed over."""
    exclusive: bool
    """One process owns the database (a SQLite file); several share a Postgres one."""

    def or_empty(self, column: str) -> str:
        """``column``, or ``''`` where it is NULL (the unique idempotency index is built on this)."""
        return self._or_empty.format(column)

    def utc_day(self, column: str) -> str:
        """The UTC day (``YYYY-MM-DD``) of ``column``, a Unix time in seconds."""
        return self._utc_day.format(column)


SQLITE = Dialect("sqlite", "ifnull({}, '')", "date({}, 'unixepoch')", skip_locked="", exclusive=True)
POSTGRES = Dialect(
    "postgres",
    "coalesce({}, '')",
    "to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    exclusive=False,
)
