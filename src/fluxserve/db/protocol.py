"""What the repositories need of a database: :class:`Database`, a protocol SQLite and Postgres both fill.

Each repository owns its SQL and writes it once for both databases: ``?`` placeholders, standard
SQL, and the few expressions the two spell differently taken from :attr:`Database.dialect`. Rows
are read by column name (``row["id"]``), never by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from fluxserve.db.dialects import Dialect


class Row(Protocol):
    """One row of a result, read by column name."""

    def __getitem__(self, column: str, /) -> Any: ...


class Statements(Protocol):
    """Statements one at a time: on a :class:`Database` each is its own transaction; inside
    :meth:`Database.transaction` they all happen, or none does."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return how many rows it changed."""
        ...

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


class Notices(Protocol):
    """Notices sent on one channel by any process on the database (Postgres ``LISTEN``), heard on a
    connection of their own. Used from one thread."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notice. True when one came, or when the connection
        was just made (notices sent before were missed: read what is new); False after ``timeout``.

        Raises :class:`~fluxserve.errors.DatabaseUnavailable` while the database cannot be reached;
        the next call connects again."""
        ...

    def close(self) -> None: ...


class Database(Statements, Protocol):
    """The server's database: every repository (jobs, keys, usage, webhook deliveries) shares one.

    Raises :class:`~fluxserve.errors.DatabaseUnavailable` while it cannot be reached.
    """

    @property
    def dialect(self) -> Dialect: ...

    @property
    def schema_version(self) -> int:
        """How many migrations the database has had."""
        ...

    def transaction(self) -> AbstractContextManager[Statements]:
        """Several statements as one: all of them happen, or none."""
        ...

    def next_boot(self) -> int:
        """Count this process's start: event ids begin with it, so a restart never reuses one."""
        ...

    def listen(self, channel: str) -> Notices | None:
        """Notices on ``channel`` from every process on this database; None where one process owns
        it (SQLite): there is nobody else to hear. Nothing connects until the first wait."""
        ...

    def close(self) -> None: ...


NEXT_BOOT = (
    "INSERT INTO meta (key, value) VALUES ('boot', '1') "
    "ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT) RETURNING value"
)
"""One statement, the same on both databases: the boot counter, made or moved one up."""


def count_boot(statements: Statements) -> int:
    """Move the boot counter one up, as one statement; return its new value."""
    [row] = statements.fetch_all(NEXT_BOOT)
    return int(row["value"])
