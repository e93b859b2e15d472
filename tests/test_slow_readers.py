"""A client that stops reading an event stream, against a real server on loopback.

The server's listening socket has a small send buffer and the client a small receive buffer, so
the server's writes back up after a few frames and the stream's generator stops taking events:
the case the bounded watchers are for. The job runs on, other watchers are unaffected, the
stalled watcher is dropped, and once its client reads again its stream ends and it resumes with
Last-Event-ID.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import h11
import pytest
from fastapi import FastAPI
from httpx_sse import ServerSentEvent, connect_sse

from tests.helpers import TEST_TIMEOUT, wait_for
from tests.jobs_support import SLOW, LiveServer
from tests.servers import serve_in_thread

pytestmark = pytest.mark.slow

SMALL_BUFFER = 4096
PENDING = 4
STEPS = 100


@contextmanager
def stalling_server(make_app: Callable[..., FastAPI]) -> Iterator[LiveServer]:
    """A server with previews on every step, few pending events, and a small send buffer per connection."""
    app = make_app(models=["tiny-random-base"], preview_every=1, sse_max_pending_events=PENDING)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)  # accepted connections inherit it
    sock.bind(("127.0.0.1", 0))
    with serve_in_thread(app, sock) as url, LiveServer(app, url) as server:
        yield server


class RawSseClient:
    """GET an event stream over a socket that reads only when told to."""

    def __init__(self, url: str, path: str) -> None:
        address = urlsplit(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)  # before connecting
        self.sock.settimeout(TEST_TIMEOUT)
        self.sock.connect((address.hostname or "", address.port or 80))
        self.http = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET", target=path, headers=[("host", address.netloc), ("accept", "text/event-stream")]
        )
        self.sock.sendall(self.http.send(request) + self.http.send(h11.EndOfMessage()))
        self.body = b""

    def read_until(self, done: Callable[[], bool]) -> list[h11.Event]:
        """Read and parse until ``done()``; the events of the response."""
        seen: list[h11.Event] = []
        while not done():
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(self.sock.recv(65536))
                continue
            assert isinstance(event, h11.Event), event
            assert not isinstance(event, h11.ConnectionClosed), "the stream closed without its end"
            if isinstance(event, h11.Data):
                self.body += bytes(event.data)
            seen.append(event)
            if isinstance(event, h11.EndOfMessage):
                break
        return seen

    def events(self) -> list[dict[str, Any]]:
        """The events read so far: id, event and data (as text) of each complete one."""
        blocks = self.body.decode().split("\n\n")[:-1]
        parsed = []
        for block in blocks:
            fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
            if "event" in fields:
                parsed.append(fields)
        return parsed

    def close(self) -> None:
        self.sock.close()


def test_a_client_that_stops_reading_is_dropped_and_resumes_with_last_event_id(
    make_app: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxserve.jobs")
    with stalling_server(make_app) as server:
        job = server.submit({**SLOW, "steps": STEPS})
        stalled = RawSseClient(server.url, urlsplit(job["urls"]["events"]).path)
        try:
            started = stalled.read_until(lambda: any(e["event"] == "progress" for e in stalled.events()))
            assert isinstance(started[0], h11.Response)
            assert started[0].status_code == 200

            # Another watcher of the same job, reading all along, sees every step and the end.
            watched: list[ServerSentEvent] = []
            reader = threading.Thread(target=lambda: watched.extend(_read_all(server, job["urls"]["events"])))
            reader.start()

            # The stalled client reads nothing more: its watcher falls behind and is dropped.
            wait_for(lambda: "fell 4 events behind" in caplog.text, "the stalled watcher dropped")
            done = server.wait_status(job["id"], "succeeded")
            assert done["status"] == "succeeded"  # the worker was never held up
            reader.join(TEST_TIMEOUT)
            assert [e.event for e in watched][-1] == "completed"
            assert [e.json()["step"] for e in watched if e.event == "progress"] == list(range(1, STEPS + 1))
            assert server.http.get("/health").status_code == 200
            assert server.service.bus.pending(job["id"]) == 0

            # Reading again, the stalled client gets what was in flight, then its stream ends.
            stalled.read_until(lambda: False)
            seen = stalled.events()
            assert seen[-1]["event"] == "progress"  # no end: it was dropped before the job finished
        finally:
            stalled.close()
        wait_for(lambda: server.service.bus.watchers(job["id"]) == 0, "no watchers left")

        rest = list(_read_all(server, job["urls"]["events"], last_event_id=seen[-1]["id"]))
        assert rest[-1].event == "completed"
        steps = [json.loads(e["data"])["step"] for e in seen if e["event"] == "progress"]
        steps += [e.json()["step"] for e in rest if e.event == "progress"]
        assert steps == list(range(1, STEPS + 1))  # nothing lost, nothing twice


def _read_all(server: LiveServer, path: str, last_event_id: str | None = None) -> Iterator[ServerSentEvent]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    with connect_sse(server.http, "GET", path, headers=headers) as source:
        yield from source.iter_sse()
