"""uvicorn as fluxserve runs it: the one Config the CLI and the tests use, with a header-read timeout.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but waits forever for a
request's headers: a client that opens connections and sends a few header bytes, or nothing,
holds them without limit. :class:`HeaderTimeoutProtocol` is uvicorn's h11 protocol with a timer
that runs from the moment a connection opens, or the first byte of a later request arrives,
until the request's headers are complete; if it fires first, the connection is closed. A body
that stalls is the ASGI middleware's to time out (:class:`fluxserve.api.middleware.BodyTimeout`),
since only the app knows when it is waiting for body bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from fluxserve.settings import Settings

log = logging.getLogger("fluxserve.server")


class ServerConfig(uvicorn.Config):
    """uvicorn's Config with fluxserve's protocol and the header timeout it reads."""

    def __init__(self, app: Any, *, header_timeout_seconds: float, **kwargs: Any) -> None:
        super().__init__(app, http=HeaderTimeoutProtocol, **kwargs)
        self.header_timeout_seconds = header_timeout_seconds


def server_config(app: Any, settings: Settings, **overrides: Any) -> ServerConfig:
    """The Config ``fluxserve serve`` runs ``app`` with; ``overrides`` are uvicorn.Config arguments (tests' port 0)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "access_log": False,
        "log_config": None,  # uvicorn's lines go through the root logger, in the server's log format
        "timeout_graceful_shutdown": 10,
    }
    return ServerConfig(app, header_timeout_seconds=settings.header_timeout_seconds, **{**options, **overrides})


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers take too long to arrive."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = config.header_timeout_seconds if isinstance(config, ServerConfig) else 10.0
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # the first bytes of a request (after a keep-alive wait)
            self._start_header_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # its headers are complete (or the connection is done)
            self._stop_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        log.debug("closed a connection from %s: no complete request headers in %g s", self.client, self.header_timeout)
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()
