"""API keys, rate windows and quota periods, on a real SQLite store (the HTTP side: test_auth_api.py)."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fluxserve.accounts import keys as key_module
from fluxserve.accounts.keys import KEY_FORMAT, KeyLimits, Period, Scope, hash_key, key_matches, new_key
from fluxserve.accounts.keystore import KeyStore, parse_expiry
from fluxserve.accounts.periods import iso, period_bounds
from fluxserve.accounts.ratelimit import RateLimiter
from fluxserve.db import DATABASE_FILE, Database
from fluxserve.errors import AuthenticationFailed, InvalidRequest, NotFound
from tests.helpers import ManualClock

NOW = datetime(2026, 11, 22, 15, 30, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def store(database: Database) -> Database:
    """SQLite, then Postgres (the ``database`` fixture)."""
    return database


@pytest.fixture
def keys(store: Database, clock: ManualClock) -> KeyStore:
    return KeyStore(store, clock)


def test_a_new_key_is_recognisable_random_and_long() -> None:
    made = {new_key() for _ in range(200)}
    assert len(made) == 200
    assert all(KEY_FORMAT.fullmatch(key) and key.startswith("fsk_") and len(key) == 52 for key in made)


def test_the_database_holds_only_a_hash_of_the_key(keys: KeyStore, store: Database, tmp_path: Path) -> None:
    key, secret = keys.create("alice")
    assert key.prefix == secret[:12]
    columns = ("id", "prefix", "hash", "name", "scope", "created_at")
    rows = store.fetch_all(f"SELECT {', '.join(columns)} FROM api_keys")
    stored = " ".join(str(row[column]) for row in rows for column in columns)
    assert secret not in stored
    assert secret[12:] not in stored  # not even the part after the prefix
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    if store.dialect.name == "sqlite":
        data_dir = tmp_path / "data"
        everything = sqlite3.connect(data_dir / DATABASE_FILE).execute("SELECT * FROM api_keys").fetchall()
        assert secret[12:] not in " ".join(str(value) for row in everything for value in row)
        files = b"".join(path.read_bytes() for path in data_dir.iterdir() if path.is_file())
        assert secret.encode() not in files  # nor in the WAL


def test_authenticate_accepts_the_key_and_nothing_like_it(keys: KeyStore) -> None:
    key, secret = keys.create("alice")
    assert keys.authenticate(secret).id == key.id
    same_prefix = secret[:12] + ("A" if secret[12] != "A" else "B") + secret[13:]
    for wrong in (same_prefix, new_key(), "fsk_short", secret + "x", secret.upper(), ""):
        with pytest.raises(AuthenticationFailed) as refused:
            keys.authenticate(wrong)
        assert refused.value.code == "invalid_api_key"


def test_a_revoked_key_and_an_expired_key_are_refused_by_name(keys: KeyStore, clock: ManualClock) -> None:
    revoked, revoked_secret = keys.create("old")
    keys.revoke(revoked.id)
    keys.revoke(revoked.id)  # again: no change, no error
    expiring, expiring_secret = keys.create("temp", expires_at=NOW + 60)
    assert keys.authenticate(expiring_secret).id == expiring.id
    clock.advance(60)
    for secret, code in ((revoked_secret, "revoked_api_key"), (expiring_secret, "expired_api_key")):
        with pytest.raises(AuthenticationFailed) as refused:
            keys.authenticate(secret)
        assert refused.value.code == code
    assert [key.status(clock()) for key in keys.all()] == ["revoked", "expired"]
    assert keys.active() == []
    assert keys.any()


def test_keys_are_compared_with_compare_digest(keys: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison in use takes time independent of where the digests differ (not ==)."""
    _, secret = keys.create("alice")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(key_module.hmac, "compare_digest", spy)
    keys.authenticate(secret)
    assert calls == [(hash_key(secret).encode(), hash_key(secret).encode())]
    assert not key_matches(new_key(), hash_key(secret))
    assert len(calls) == 2


def test_find_by_id_prefix_or_name(keys: KeyStore) -> None:
    key, secret = keys.create("alice")
    keys.create("twin")
    keys.create("twin")
    assert keys.find(key.id).id == key.id
    assert keys.find(secret[:12]).id == key.id
    assert keys.find("alice").id == key.id
    with pytest.raises(InvalidRequest, match="2 keys are named"):
        keys.find("twin")
    with pytest.raises(NotFound):
        keys.find("bob")


@pytest.mark.parametrize(
    ("name", "limits", "expires_at", "param"),
    [
        ("", KeyLimits(), None, "name"),
        ("x" * 65, KeyLimits(), None, "name"),
        ("bad\nname", KeyLimits(), None, "name"),
        ("a", KeyLimits(quota_megapixels=5), None, "quota_period"),
        ("a", KeyLimits(quota_period=Period.DAY), None, "quota_period"),
        ("a", KeyLimits(), NOW - 1, "expires"),
    ],
)
def test_bad_key_settings_are_refused(
    keys: KeyStore, name: str, limits: KeyLimits, expires_at: float | None, param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        keys.create(name, Scope.GENERATE, limits, expires_at)
    assert refused.value.param == param
    assert not keys.any()


@pytest.mark.parametrize(
    ("limits", "param"),
    [
        ({"rpm": 0}, "rpm"),
        ({"rpm": 1_000_001}, "rpm"),
        ({"rpm": 1.5}, "rpm"),
        ({"rpm": True}, "rpm"),
        ({"concurrency": -1}, "concurrency"),
        ({"concurrency": 10**30}, "concurrency"),
        ({"quota_megapixels": 0}, "quota_megapixels"),
        ({"quota_megapixels": -5.0}, "quota_megapixels"),
        ({"quota_megapixels": float("inf")}, "quota_megapixels"),
        ({"quota_megapixels": float("nan")}, "quota_megapixels"),
        ({"quota_megapixels": 1e300}, "quota_megapixels"),
    ],
)
def test_limits_that_are_not_finite_and_positive_cannot_be_made(limits: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        KeyLimits(**limits, quota_period=Period.DAY)
    assert refused.value.param == param
    assert "omit it" in refused.value.message


def test_a_stored_infinite_quota_reads_as_what_it_did_no_quota(keys: KeyStore, store: Database) -> None:
    key, _ = keys.create("old", Scope.GENERATE, KeyLimits(quota_megapixels=5, quota_period=Period.DAY))
    store.execute("UPDATE api_keys SET quota_megapixels = ? WHERE id = ?", (float("inf"), key.id))
    assert keys.get(key.id).limits == KeyLimits()


def test_expiry_is_a_date_a_date_time_or_a_duration() -> None:
    assert parse_expiry("2027-01-31", NOW) == datetime(2027, 1, 31, tzinfo=UTC).timestamp()
    assert parse_expiry("2027-01-31T12:00:00Z", NOW) == datetime(2027, 1, 31, 12, tzinfo=UTC).timestamp()
    assert parse_expiry("2027-01-31T12:00:00", NOW) == datetime(2027, 1, 31, 12, tzinfo=UTC).timestamp()
    assert parse_expiry("30d", NOW) == NOW + 30 * 86400
    assert parse_expiry("12h", NOW) == NOW + 12 * 3600
    for bad in ("tomorrow", "30m", "2027-13-01", "", "\u0663\u0660d", "³d", "1_0d"):
        with pytest.raises(InvalidRequest):
            parse_expiry(bad, NOW)


def test_quota_periods_are_utc_days_and_months() -> None:
    day = period_bounds(Period.DAY, NOW)
    assert (iso(day[0]), iso(day[1])) == ("2026-11-22T00:00:00Z", "2026-11-23T00:00:00Z")
    month = period_bounds(Period.MONTH, NOW)
    assert (iso(month[0]), iso(month[1])) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    assert iso(period_bounds(Period.MONTH, december)[1]) == "2027-01-01T00:00:00Z"
    assert iso(period_bounds(Period.DAY, december)[1]) == "2027-01-01T00:00:00Z"


def test_the_rate_window_counts_accepted_requests_of_the_last_minute() -> None:
    limiter = RateLimiter()
    for offset in (0, 10, 20):
        assert limiter.wait_needed("k", 3, NOW + offset) == 0
        limiter.record("k", NOW + offset)
    assert limiter.wait_needed("k", 3, NOW + 30) == 30  # the first one leaves the window at +60
    assert limiter.wait_needed("other", 3, NOW + 30) == 0
    assert limiter.wait_needed("k", 3, NOW + 60) == 0
    assert limiter.wait_needed("k", 1, NOW + 60) == 20  # with a limit of 1, the latest one counts
