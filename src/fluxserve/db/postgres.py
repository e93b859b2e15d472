"""The Postgres database (psycopg 3 and its pool): the store for deployments that outgrow one file.

Each call takes a connection from the pool for one statement (autocommit), or for the whole
``with`` block of :meth:`PostgresDatabase.transaction` (a real transaction on one connection).
The repositories' ``?`` placeholders become psycopg's ``%s`` here. Migrations run at start under
an advisory lock, so two processes starting at once apply each one once; the version is kept in
the ``schema_version`` table.

While the server cannot be reached every call raises :class:`~fluxserve.errors.DatabaseUnavailable`
(the API answers 503) after waiting ``timeout`` seconds for a connection; the pool checks a
connection before handing it out and reconnects by itself, so work resumes when Postgres is back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from fluxserve.db.dialects import POSTGRES, Dialect
from fluxserve.db.postgres_schema import MIGRATIONS
from fluxserve.db.protocol import Row, count_boot
from fluxserve.errors import DatabaseUnavailable, InvalidRequest

log = logging.getLogger("fluxserve.db")

MIGRATION_LOCK = int.from_bytes(b"fluxserv")
"""The advisory lock that migrations run under (any fixed 64-bit number)."""
RECONNECT_SECONDS = 30.0
"""How long the pool keeps retrying a lost connection (with backoff) before it starts afresh on demand."""

_TOKENS = re.compile(r"'(?:[^']|'')*'|\?|%")

Connection = psycopg.Connection[DictRow]


@lru_cache(maxsize=1024)
def placeholders(sql: str) -> str:
    """``sql`` in psycopg's style: ``?`` outside string literals is ``%s``, and every ``%`` is ``%%``."""

    def swap(token: re.Match[str]) -> str:
        text = token.group()
        return "%s" if text == "?" else text.replace("%", "%%")

    return _TOKENS.sub(swap, sql)


def where(url: str) -> str:
    """``host:port/dbname`` of a connection URL, for messages: never its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable database_url)"
    host = parts.get("host") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or parts.get('user') or ''}"


def _values(params: Sequence[Any]) -> tuple[Any, ...]:
    """``params`` as psycopg takes them. Postgres text cannot hold NUL (SQLite's can): such a value is
    the caller's to fix, a 400, never a 500 from the driver."""
    values = tuple(params)
    if any(isinstance(value, str) and "\x00" in value for value in values):
        raise InvalidRequest("text with a NUL character (\\u0000) cannot be stored or looked up; leave it out")
    return values


class _Statements:
    """The statements of one connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._connection.execute(placeholders(sql), _values(params)).rowcount

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = list(self._connection.execute(placeholders(sql), _values(params)).fetchall())
        return rows

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._connection.execute(placeholders(sql), _values(params)).fetchone()


class PostgresDatabase:
    """A pool of connections to one Postgres database, migrated to this version's schema at start."""

    def __init__(self, url: str, *, pool_size: int = 10, timeout: float = 5.0) -> None:
        """Raises InvalidRequest for a URL libpq cannot read, DatabaseUnavailable when it cannot connect."""
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as error:
            raise InvalidRequest(f"setting database_url: {error}", param="database_url") from None
        self._url, self._where = url, where(url)
        self._down = False
        options: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": max(2, round(timeout)),
        }
        self._options = options
        try:
            with psycopg.connect(url, **options) as connection:
                _migrate(connection)
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(f"cannot reach the database at {self._where}: {error}".strip()) from None
        self._pool = ConnectionPool(
            url,
            connection_class=Connection,
            kwargs=options,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            check=ConnectionPool.check_connection,
            reconnect_timeout=RECONNECT_SECONDS,
            name="fluxserve",
            open=False,
        )
        self._pool.open()

    @property
    def dialect(self) -> Dialect:
        return POSTGRES

    @property
    def schema_version(self) -> int:
        row = self.fetch_one("SELECT version FROM schema_version")
        return 0 if row is None else int(row["version"])

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A connection of the pool for the block; DatabaseUnavailable when none can be had or it breaks."""
        try:
            with self._pool.connection() as connection:
                yield connection
        except psycopg.OperationalError as error:
            if not self._down:
                log.warning("the database at %s cannot be reached: %s", self._where, str(error).strip())
            self._down = True
            raise DatabaseUnavailable("the server's database cannot be reached just now; try again shortly") from error
        if self._down:
            self._down = False
            log.info("the database at %s is reachable again", self._where)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return how many rows it changed."""
        with self._connection() as connection:
            return _Statements(connection).execute(sql, params)

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._connection() as connection:
            return _Statements(connection).fetch_all(sql, params)

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with self._connection() as connection:
            return _Statements(connection).fetch_one(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[_Statements]:
        """Several statements as one, on one connection: all of them happen, or none."""
        with self._connection() as connection, connection.transaction():
            yield _Statements(connection)

    def next_boot(self) -> int:
        """Count this process's start: event ids begin with it, so a restart never reuses one."""
        with self.transaction() as statements:
            return count_boot(statements)

    def listen(self, channel: str) -> PostgresNotices:
        """``LISTEN`` on ``channel`` (a lower-case SQL name), on a connection of its own outside the pool."""
        return PostgresNotices(self._url, channel, {**self._options, **KEEPALIVES}, self._where)


KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
"""TCP keepalives for a connection that only listens: a database host that vanished without closing
it (a crash, a network partition) is noticed in about half a minute, not the system's two hours."""
CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresNotices:
    """Notices on one channel: a connection of its own in autocommit that runs ``LISTEN``, made at
    the first :meth:`wait` and made again at the first wait after it was lost."""

    def __init__(self, url: str, channel: str, options: dict[str, Any], where: str) -> None:
        if CHANNEL.fullmatch(channel) is None:
            raise ValueError(f"not a channel name: {channel!r}")
        self.channel = channel
        self._url, self._options, self._where = url, options, where
        self._connection: Connection | None = None

    def wait(self, timeout: float) -> bool:
        """True when a notice came within ``timeout`` seconds or the connection was just made;
        DatabaseUnavailable while the database cannot be reached (the next call connects again)."""
        if self._connection is None:
            self._connection = self._connect()
            return True
        try:
            for _notice in self._connection.notifies(timeout=timeout, stop_after=1):
                return True
        except psycopg.Error as error:
            self.close()
            raise DatabaseUnavailable(f"stopped listening to the database at {self._where}: {error}".strip()) from None
        return False

    def _connect(self) -> Connection:
        try:
            connection: Connection = psycopg.connect(self._url, **self._options)
        except psycopg.Error as error:
            raise DatabaseUnavailable(f"cannot listen to the database at {self._where}: {error}".strip()) from None
        try:
            connection.execute(f"LISTEN {self.channel}")
        except psycopg.Error as error:
            connection.close()
            raise DatabaseUnavailable(f"cannot listen to the database at {self._where}: {error}".strip()) from None
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _migrate(connection: Connection) -> None:
    """Apply the migrations this database has not had, under an advisory lock, as one transaction."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        row = connection.execute("SELECT version FROM schema_version").fetchone()
        current = 0 if row is None else int(row["version"])
        pending = [(version, script) for version, script in MIGRATIONS if version > current]
        for _, script in pending:
            connection.execute(script)  # several statements: no parameters, so one simple query
        if pending and row is None:
            connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (pending[-1][0],))
        elif pending:
            connection.execute("UPDATE schema_version SET version = %s", (pending[-1][0],))
        if pending:
            log.info("database schema migrated from version %d to %d", current, pending[-1][0])
