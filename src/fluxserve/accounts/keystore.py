"""API keys kept in the job store's database: create, list, find, revoke, authenticate."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from fluxserve.accounts.keys import (
    KEY_FORMAT,
    ApiKey,
    KeyLimits,
    Period,
    Scope,
    hash_key,
    key_matches,
    looks_like_key,
    new_key,
    new_key_id,
    prefix_of,
)
from fluxserve.db import Database, Row
from fluxserve.errors import AuthenticationFailed, ErrorCode, InvalidRequest, NotFound

_NAME = re.compile(r"[\w .@:/+-]{1,64}")
_DURATION = re.compile(r"([0-9]{1,5})([dh])")


def parse_expiry(text: str, now: float) -> float:
    """``2027-01-31`` (midnight UTC at its start), an ISO date-time, or a duration such as ``30d`` or ``12h``."""
    text = text.strip()
    duration = _DURATION.fullmatch(text)
    if duration is not None:
        amount, unit = int(duration.group(1)), duration.group(2)
        return now + timedelta(days=amount if unit == "d" else 0, hours=amount if unit == "h" else 0).total_seconds()
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(text)
            moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequest(
            f"expires {text!r} should be a date (2027-01-31), a date-time (2027-01-31T12:00:00Z) "
            "or a duration (30d, 12h)",
            param="expires",
        ) from None
    return moment.timestamp()


def _check(name: str, limits: KeyLimits, expires_at: float | None, now: float) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidRequest("name must be 1-64 letters, digits, spaces or . _ @ : / + -", param="name")
    if (limits.quota_megapixels is None) != (limits.quota_period is None):
        raise InvalidRequest(
            "a quota needs both quota_megapixels and quota_period (day or month)", param="quota_period"
        )
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("expires is in the past; give a later date", param="expires")


def _limits(row: Row) -> KeyLimits:
    quota, period = row["quota_megapixels"], row["quota_period"]
    if quota is not None and not math.isfinite(quota):
        # Before limits were checked, a quota of inf could be stored; it never limited anything.
        quota, period = None, None
    return KeyLimits(
        rpm=row["rpm"],
        concurrency=row["concurrency"],
        quota_megapixels=quota,
        quota_period=None if period is None else Period(period),
        loras=_lora_names(row["loras"]),
    )


def _lora_names(stored: str | None) -> tuple[str, ...] | None:
    """A key's stored allow-list (a JSON list); NULL, as every key made before the lists has, is every adapter."""
    return None if stored is None else tuple(json.loads(stored))


def _key(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        prefix=row["prefix"],
        name=row["name"],
        scope=Scope(row["scope"]),
        created_at=row["created_at"],
        limits=_limits(row),
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


class KeyStore:
    def __init__(self, store: Database, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._any = False

    def create(
        self,
        name: str,
        scope: Scope = Scope.GENERATE,
        limits: KeyLimits | None = None,
        expires_at: float | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which is not kept: show it to its owner once."""
        limits = limits or KeyLimits()
        now = self._clock()
        _check(name, limits, expires_at, now)
        secret = new_key()
        key = ApiKey(new_key_id(), prefix_of(secret), name, scope, now, limits, expires_at)
        self._store.execute(
            "INSERT INTO api_keys (id, prefix, hash, name, scope, rpm, concurrency, quota_megapixels, quota_period, "
            "loras, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                key.prefix,
                hash_key(secret),
                name,
                scope.value,
                limits.rpm,
                limits.concurrency,
                limits.quota_megapixels,
                None if limits.quota_period is None else limits.quota_period.value,
                None if limits.loras is None else json.dumps(list(limits.loras)),
                expires_at,
                now,
            ),
        )
        return key, secret

    def all(self) -> list[ApiKey]:
        return [_key(row) for row in self._store.fetch_all("SELECT * FROM api_keys ORDER BY created_at, rowid")]

    def any(self) -> bool:
        """Whether a key was ever made (keys are revoked, never deleted: once true, always true)."""
        if not self._any:
            self._any = self._store.fetch_one("SELECT 1 FROM api_keys LIMIT 1") is not None
        return self._any

    def active(self) -> list[ApiKey]:
        now = self._clock()
        return [key for key in self.all() if key.status(now) == "active"]

    def get(self, key_id: str) -> ApiKey:
        row = self._store.fetch_one("SELECT * FROM api_keys WHERE id = ?", (key_id,))
        if row is None:
            raise NotFound(f"no key {key_id!r}")
        return _key(row)

    def find(self, reference: str) -> ApiKey:
        """A key by its id (key_...), its prefix (fsk_ and 8 more characters) or its name, if only one has it."""
        prefix = prefix_of(reference) if looks_like_key(reference) else None
        rows = self._store.fetch_all(
            "SELECT * FROM api_keys WHERE id = ? OR prefix = ? OR name = ?", (reference, prefix, reference)
        )
        if len(rows) > 1:
            raise InvalidRequest(f"{len(rows)} keys are named {reference!r}; give the key's id instead", param="key")
        if not rows:
            raise NotFound(f"no key {reference!r}; `fluxserve keys list` shows them")
        return _key(rows[0])

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key at once; revoking it again changes nothing."""
        self._store.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (self._clock(), key_id)
        )
        return self.get(key_id)

    def authenticate(self, presented: str) -> ApiKey:
        """The key ``presented`` is, if it is one of ours and still valid; else AuthenticationFailed."""
        wrong = AuthenticationFailed(
            "the API key is not valid; check it, or ask for a new one", code=ErrorCode.INVALID_API_KEY
        )
        if not KEY_FORMAT.fullmatch(presented):
            raise wrong
        row = self._store.fetch_one("SELECT * FROM api_keys WHERE prefix = ?", (prefix_of(presented),))
        if row is None or not key_matches(presented, row["hash"]):
            raise wrong
        key = _key(row)
        status = key.status(self._clock())
        if status == "revoked":
            raise AuthenticationFailed("this API key was revoked; ask for a new one", code=ErrorCode.REVOKED_API_KEY)
        if status == "expired":
            raise AuthenticationFailed("this API key has expired; ask for a new one", code=ErrorCode.EXPIRED_API_KEY)
        return key

    def touch(self, key_id: str) -> None:
        """Note that a key was just used to submit work."""
        self._store.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (self._clock(), key_id))
