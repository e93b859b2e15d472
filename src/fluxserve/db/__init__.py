"""The database every repository shares: jobs, API keys, usage and webhook deliveries.

:func:`open_database` picks it from the settings: the SQLite file in the data directory
(:mod:`fluxserve.db.sqlite`, the default: nothing to run), or Postgres for a ``database_url``
(:mod:`fluxserve.db.postgres`, the ``postgres`` extra: several processes over one store). Each
repository owns its SQL, written once for both (see :mod:`fluxserve.db.protocol` and
:mod:`fluxserve.db.dialects`).
"""

from __future__ import annotations

from fluxserve.db.dialects import Dialect
from fluxserve.db.protocol import Database, Notices, Row, Statements
from fluxserve.db.sqlite import DATABASE_FILE, SqliteDatabase
from fluxserve.errors import MissingExtra
from fluxserve.settings import Settings

__all__ = ["DATABASE_FILE", "Database", "Dialect", "Notices", "Row", "SqliteDatabase", "Statements", "open_database"]


def open_database(settings: Settings) -> Database:
    """The database ``settings`` name, migrated to this version's schema.

    Raises :class:`~fluxserve.errors.DatabaseUnavailable` when Postgres cannot be reached, and
    :class:`~fluxserve.errors.MissingExtra` without the ``postgres`` extra.
    """
    if settings.database_url is None:
        return SqliteDatabase(settings.data_dir / DATABASE_FILE)
    try:
        from fluxserve.db.postgres import PostgresDatabase
    except ImportError as error:
        raise MissingExtra("postgres", "a Postgres database_url", error.name or "psycopg") from None
    return PostgresDatabase(
        settings.database_url, pool_size=settings.database_pool_size, timeout=settings.database_timeout_seconds
    )
