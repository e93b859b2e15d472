"""What each served model accepts, published in the store for processes that run no worker.

A process that loads a model (a Ray Serve model replica, or any server with workers) writes the
model's :class:`~fluxserve.engines.base.Capabilities` to the store's ``meta`` table once it has
loaded; an ingress-only process (``run_workers = false``) validates requests against what it
reads there. A model nobody has loaded yet is "loading" to such a process (requests get 503
with Retry-After); the last published capabilities stay valid while its replicas come and go.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fluxserve.db import Database
from fluxserve.engines.base import Capabilities

KEY_PREFIX = "capabilities:"
FIELDS = frozenset(field.name for field in dataclasses.fields(Capabilities))


class PublishedModels:
    """The capabilities of each model, as the last process that loaded it published them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def publish(self, model: str, capabilities: Capabilities) -> None:
        value = json.dumps(dataclasses.asdict(capabilities), sort_keys=True)
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (KEY_PREFIX + model, value),
        )

    def capabilities(self, model: str) -> Capabilities | None:
        """What ``model`` accepts; None while no process has loaded it."""
        row = self._db.fetch_one("SELECT value FROM meta WHERE key = ?", (KEY_PREFIX + model,))
        if row is None:
            return None
        fields: dict[str, Any] = json.loads(row["value"])
        return Capabilities(**{name: value for name, value in fields.items() if name in FIELDS})
