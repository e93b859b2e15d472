"""Webhook URLs in logs: only their origin, since a URL's path and query may hold the receiver's token.

The sender's own lines use :func:`origin`; httpx logs each request's full URL at INFO, so
:func:`hide_urls_in_httpx_logs` (called when a sender starts, once per process) adds a filter that
rewrites those lines on the sender threads.
"""

from __future__ import annotations

import logging
import threading

import httpx

SEND_THREAD_PREFIX = "webhooks-send-"
"""The names of the threads that make the attempts; the httpx filter acts on these only."""

_installing = threading.Lock()


def origin(url: str | httpx.URL) -> str:
    """``scheme://host[:port]`` of a webhook URL, for logs: its path and query may hold the receiver's token."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL:
        return "(an invalid URL)"
    port = "" if parsed.port is None else f":{parsed.port}"
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}{port}"


class OriginsOnly(logging.Filter):
    """httpx logs each request's full URL at INFO: on the sender threads, log only the webhook URL's origin."""

    def filter(self, record: logging.LogRecord) -> bool:
        if threading.current_thread().name.startswith(SEND_THREAD_PREFIX) and isinstance(record.args, tuple):
            record.args = tuple(origin(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args)
        return True


def hide_urls_in_httpx_logs() -> None:
    """Add :class:`OriginsOnly` to the ``httpx`` logger unless it is there already."""
    logger = logging.getLogger("httpx")
    with _installing:
        if not any(isinstance(each, OriginsOnly) for each in logger.filters):
            logger.addFilter(OriginsOnly())
