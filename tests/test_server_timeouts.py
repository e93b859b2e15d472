"""Slow clients against a real server on loopback: headers that never finish, bodies that stall.

The server runs with the Config ``fluxserve serve`` uses (tests/servers.py builds it with
``server_config``). Raw sockets play the clients; every wait is bounded by TEST_TIMEOUT, and a
connection the server failed to close shows up as that wait running out.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from fluxserve.api.app import create_app
from fluxserve.settings import Settings
from tests.helpers import TEST_TIMEOUT
from tests.jobs_support import QUICK, LiveServer
from tests.servers import serve_in_thread

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 1.0
GENERATIONS = "/v1/images/generations"


@pytest.fixture
def server_url(make_settings: Callable[..., Settings]) -> Iterator[str]:
    """A server with short header and body timeouts and no engines: requests for a model get a quick 404."""
    settings = make_settings(header_timeout_seconds=HEADER_TIMEOUT, body_timeout_seconds=BODY_TIMEOUT)
    with serve_in_thread(create_app(settings, {})) as url:
        yield url


@contextmanager
def connection(url: str) -> Iterator[socket.socket]:
    port = httpx.URL(url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=TEST_TIMEOUT) as sock:
        yield sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a recv timeout fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def one_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response with a Content-Length; the connection stays open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    status, headers = parse_head(head)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers


def request_head(length: int) -> bytes:
    return (
        f"POST {GENERATIONS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def unknown_model_body() -> bytes:
    return json.dumps({"model": "tiny-random", "prompt": "a lighthouse " * 40}).encode()


# -- headers ---------------------------------------------------------------------------------


def test_a_connection_that_never_finishes_its_headers_is_closed(server_url: str) -> None:
    with connection(server_url) as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")

        assert until_closed(sock) == b""


def test_a_connection_that_sends_nothing_is_closed(server_url: str) -> None:
    with connection(server_url) as sock:
        assert until_closed(sock) == b""


def test_the_next_request_on_a_kept_alive_connection_gets_the_same_limit(server_url: str) -> None:
    """uvicorn stops its keep-alive timer at the next request's first byte: from then on the header timer counts."""
    with connection(server_url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, _ = one_response(sock)
        assert status == 200

        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 12")

        assert until_closed(sock) == b""


# -- bodies ----------------------------------------------------------------------------------


def test_a_stalled_body_is_answered_408_in_the_api_error_shape_and_the_connection_closed(server_url: str) -> None:
    body = unknown_model_body()
    with connection(server_url) as sock:
        sock.sendall(request_head(len(body)) + body[:20])

        head, payload = until_closed(sock).split(b"\r\n\r\n", 1)

    status, headers = parse_head(head)
    assert status == 408
    assert headers["connection"] == "close"
    assert headers["x-request-id"]
    error = json.loads(payload)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")
    assert "try again" in error["message"]


def test_a_slow_body_that_keeps_arriving_is_served(server_url: str) -> None:
    """Each pause is far below the body timeout, all of them together above it: only a stall counts."""
    body = unknown_model_body()
    pieces = 30
    size = -(-len(body) // pieces)
    with connection(server_url) as sock:
        sock.sendall(request_head(len(body)))
        started = time.monotonic()
        for start in range(0, len(body), size):
            time.sleep(BODY_TIMEOUT / 20)
            sock.sendall(body[start : start + size])
        status, _, payload = one_response(sock)

    assert time.monotonic() - started > BODY_TIMEOUT  # the premise: the whole body took longer than the limit
    assert status == 404  # the app's own answer to the request: the body arrived whole
    assert json.loads(payload)["error"]["code"] == "model_not_found"


def test_waiting_for_a_job_after_the_body_is_not_timed(make_server: Callable[..., LiveServer]) -> None:
    """A synchronous request listens for its client's disconnect while the job runs: that is not a stalled body.

    Headers and body go in one write, so the body is whole before the app asks for it, however short the limit.
    """
    timeout = 0.001
    server = make_server(body_timeout_seconds=timeout)
    body = json.dumps({**QUICK, "response_format": "b64_json"}).encode()
    with connection(server.url) as sock:
        sock.sendall(request_head(len(body)) + body)
        status, _, payload = one_response(sock)

    assert status == 200, payload
    job = server.job(json.loads(payload)["id"])
    assert job["finished_at"] - job["started_at"] > timeout  # the premise: the wait outlasted the body timeout


def test_the_timeouts_are_settings_with_defaults() -> None:
    settings = Settings()
    assert (settings.header_timeout_seconds, settings.body_timeout_seconds) == (10, 30)
    values: dict[str, Any] = {"header_timeout_seconds": 0}
    with pytest.raises(ValueError, match="header_timeout_seconds"):
        Settings(**values)
