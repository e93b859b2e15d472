"""The database every repository shares: jobs, API keys, usage and webhook deliveries.

:func:`open_database` picks it from the settings: the SQLite file in the data directory
(:mod:`fluxserve.db.sqlite`, the default: nothing to run). Each repository owns its SQL, written
once for every database (see :mod:`fluxserve.db.protocol` and :mod:`fluxserve.db.dialects`).
"""

from __future__ import annotations

from fluxserve.db.dialects import Dialect
from fluxserve.db.protocol import Database, Row, Statements
from fluxserve.db.sqlite import DATABASE_FILE, SqliteDatabase
from fluxserve.settings import Settings

__all__ = ["DATABASE_FILE", "Database", "Dialect", "Row", "SqliteDatabase", "Statements", "open_database"]


def open_database(settings: Settings) -> Database:
    """The database ``settings`` name, migrated to this version's schema."""
    return SqliteDatabase(settings.data_dir / DATABASE_FILE)
