"""The server's log formats: ``text`` for a terminal, ``json`` (one object per line) for a log shipper.

A JSON line has ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and, where
known, ``request_id``, ``job_id`` and ``key_id`` (:mod:`.context`), plus ``exception`` with the
traceback. Nothing else of a record goes out: the server never logs an API key, a prompt, a
webhook's signing secret or image data, and the format adds none of a record's extra fields.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from fluxserve.telemetry import context

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **context.current(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The terminal format, with the request or job id appended where one is known."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = context.current()
        return text if not ids else text + " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]"


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: LogFormat, level: int = logging.INFO) -> None:
    """Send the root logger's records (uvicorn's included) to stderr in ``log_format``."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # through the root handler, in one format
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
