"""``fluxserve keys``: create, list and revoke API keys, and report usage, in a data directory.

Works beside a running server, on the database its settings name (the SQLite file in the data
directory, or Postgres): a key created or revoked here takes effect on the server's next request.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from fluxserve.accounts.keys import ApiKey, KeyLimits, Period, Scope
from fluxserve.accounts.keystore import KeyStore, parse_expiry
from fluxserve.accounts.usage import daily_usage, start_of_day
from fluxserve.db import Database, open_database
from fluxserve.errors import InvalidRequest
from fluxserve.settings import Settings


@dataclass(frozen=True)
class NewKeyArgs:
    name: str
    scope: str
    rpm: int | None
    quota_mp: float | None
    per: str | None
    concurrency: int | None
    expires: str | None
    loras: tuple[str, ...] | None = None
    """--lora names: the only adapters the key may use (None: every one)."""


@contextlib.contextmanager
def open_keys(settings: Settings) -> Iterator[tuple[KeyStore, Database]]:
    store = open_database(settings)
    try:
        yield KeyStore(store), store
    finally:
        store.close()


def _choice(value: str, allowed: type[Scope] | type[Period], option: str) -> str:
    names = [member.value for member in allowed]
    if value not in names:
        raise InvalidRequest(f"{option} must be {' or '.join(names)}, not {value!r}", param=option)
    return value


def create_key(settings: Settings, args: NewKeyArgs) -> None:
    scope = Scope(_choice(args.scope, Scope, "--scope"))
    if (args.quota_mp is None) != (args.per is None):
        raise InvalidRequest("--quota-mp and --per go together, e.g. --quota-mp 500 --per day", param="--per")
    period = None if args.per is None else Period(_choice(args.per, Period, "--per"))
    limits = KeyLimits(
        rpm=args.rpm,
        concurrency=args.concurrency,
        quota_megapixels=args.quota_mp,
        quota_period=period,
        loras=args.loras,
    )
    expires_at = None if args.expires is None else parse_expiry(args.expires, time.time())
    with open_keys(settings) as (keys, _):
        key, secret = keys.create(args.name, scope, limits, expires_at)
    typer.echo(secret)
    typer.echo(
        f"created {key.id} ({key.name}, {key.scope.value}). Keep the key above now: it is not shown again.", err=True
    )


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _limits(key: ApiKey) -> str:
    limits = key.limits
    parts = []
    if limits.rpm is not None:
        parts.append(f"{limits.rpm}/min")
    if limits.concurrency is not None:
        parts.append(f"{limits.concurrency} at once")
    if limits.quota_megapixels is not None and limits.quota_period is not None:
        parts.append(f"{limits.quota_megapixels:g} MP/{limits.quota_period.value}")
    if limits.loras is not None:
        parts.append("LoRAs: " + (", ".join(limits.loras) or "none"))
    return ", ".join(parts) or "none"


def list_keys(settings: Settings, *, as_json: bool) -> None:
    with open_keys(settings) as (keys, _):
        found = keys.all()
    now = time.time()
    if as_json:
        typer.echo(json.dumps([key.describe(now) for key in found], indent=2))
        return
    table = Table("id", "name", "prefix", "scope", "status", "limits", "expires", "last used")
    for key in found:
        table.add_row(
            key.id,
            key.name,
            key.prefix + "...",
            key.scope.value,
            key.status(now),
            _limits(key),
            _when(key.expires_at),
            _when(key.last_used_at),
        )
    Console(width=200).print(table)


def revoke_key(settings: Settings, reference: str) -> None:
    with open_keys(settings) as (keys, _):
        key = keys.revoke(keys.find(reference).id)
    typer.echo(f"revoked {key.id} ({key.name}, {key.prefix}...)")


def print_usage(settings: Settings, *, reference: str | None, days: int, as_json: bool) -> None:
    if not 1 <= days <= 366:
        raise InvalidRequest("--days must be 1 to 366", param="--days")
    since = start_of_day(days - 1, time.time())
    with open_keys(settings) as (keys, store):
        if reference is None:
            rows = daily_usage(store, since=since, every_key=True)
        else:
            rows = daily_usage(store, since=since, key_id=keys.find(reference).id)
        names = {key.id: key.name for key in keys.all()}
    if as_json:
        typer.echo(json.dumps([row.to_json() for row in rows], indent=2))
        return
    table = Table("day", "key", "model", "jobs", "images", "steps", "MP in", "MP out", "MP")
    for row in rows:
        who = "(no key)" if row.key_id is None else f"{names.get(row.key_id, '?')} ({row.key_id})"
        table.add_row(
            row.day,
            who,
            row.model,
            str(row.jobs),
            str(row.images),
            str(row.steps),
            f"{row.input_megapixels:.2f}",
            f"{row.output_megapixels:.2f}",
            f"{row.megapixels:.2f}",
        )
    Console(width=200).print(table)
