"""Server-Sent Events: framing and keep-alives.

A comment line goes out whenever the stream has been quiet for the keep-alive interval, so
proxies and load balancers that drop idle connections keep it open.
"""

from __future__ import annotations

import json
from typing import Any

KEEPALIVE = b": keep-alive\n\n"
RECONNECT_MS = 2000
"""The reconnection delay suggested to clients (the ``retry:`` field)."""

HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
"""No caching, and no buffering in nginx-style proxies: events must arrive as they happen."""


def frame(event: str, data: dict[str, Any], event_id: str | None = None, *, retry: bool = False) -> bytes:
    """One event. ``data`` is compact JSON on a single line, as every SSE client can read it.

    ``retry`` adds the suggested reconnection delay (sent with a stream's first event: some
    clients take a block without data for an event of its own).
    """
    lines = [f"retry: {RECONNECT_MS}"] if retry else []
    lines += [] if not event_id else [f"id: {event_id}"]
    lines += [f"event: {event}", "data: " + json.dumps(data, separators=(",", ":"))]
    return ("\n".join(lines) + "\n\n").encode()


def text_frame(event: str, text: str, event_id: str, *, retry: bool = False) -> bytes:
    """One event whose data is plain text (one ``data:`` line per line of it), as Replicate streams."""
    lines = [f"retry: {RECONNECT_MS}"] if retry else []
    lines += [f"id: {event_id}", f"event: {event}"]
    lines += [f"data: {line}" for line in text.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()
