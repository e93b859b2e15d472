"""Quota periods: calendar days and months in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from fluxserve.accounts.keys import Period


def period_bounds(period: Period, now: float) -> tuple[float, float]:
    """The start of the period ``now`` falls in, and the moment the next one starts (Unix seconds)."""
    moment = datetime.fromtimestamp(now, UTC)
    if period is Period.DAY:
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        following = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        following = start.replace(year=year, month=month)
    return start.timestamp(), following.timestamp()


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
