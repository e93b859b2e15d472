"""Requests that servers and proxies may read differently are refused, against a real server on loopback.

Two Authorization or x-key headers (which one counts?) are sent with httpx, which can send them;
Transfer-Encoding with Content-Length, or Content-Length twice (request smuggling), over a raw
socket, since clients do not send them. uvicorn's h11 parser lets both kinds through to the app.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from fluxserve.accounts.keys import KeyLimits
from fluxserve.accounts.keys import Scope as KeyScope
from fluxserve.api.middleware import OneBodyLength
from tests.helpers import TEST_TIMEOUT
from tests.jobs_support import JOBS, QUICK, LiveServer

BODY = json.dumps(QUICK).encode()


@pytest.fixture
def keyed(make_server: Callable[..., LiveServer]) -> tuple[LiveServer, str]:
    """A server that needs a key, and a key for it."""
    server = make_server()
    _, secret = server.service.keys.create("alice", KeyScope.GENERATE, KeyLimits())
    return server, secret


def assert_refused(response: httpx.Response, status: int, param: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert "x-request-id" in response.headers


def assert_nothing_queued(server: LiveServer, secret: str | None = None) -> None:
    headers = {} if secret is None else {"authorization": f"Bearer {secret}"}
    listed = server.http.get(JOBS, headers=headers)
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == []
    assert server.http.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ([("authorization", "Bearer {key}"), ("authorization", "Bearer fsk_other")], "Authorization"),
        ([("authorization", "Bearer {key}"), ("authorization", "Bearer {key}")], "Authorization"),
        ([("x-key", "{key}"), ("x-key", "fsk_other")], "x-key"),
        ([("x-key", "{key}"), ("x-key", "{key}")], "x-key"),
    ],
    ids=["two-authorization", "two-equal-authorization", "two-x-key", "two-equal-x-key"],
)
def test_a_repeated_credential_header_is_refused(
    keyed: tuple[LiveServer, str], headers: list[tuple[str, str]], param: str
) -> None:
    server, secret = keyed
    sent = [(name, value.format(key=secret)) for name, value in headers]
    assert_refused(server.http.post(JOBS, json=QUICK, headers=sent), 400, param)
    assert_nothing_queued(server, secret)


def test_a_repeated_credential_header_is_refused_on_an_open_server_too(server: LiveServer) -> None:
    sent = [("authorization", "Bearer anything"), ("authorization", "Bearer else")]
    assert_refused(server.http.post(JOBS, json=QUICK, headers=sent), 400, "Authorization")
    assert_nothing_queued(server)


def raw_exchange(
    server: LiveServer, request: bytes, *, json_body: bool = True
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Send ``request`` as is; the status, headers and JSON body of the answer (the server closes)."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname or "", address.port or 80), timeout=TEST_TIMEOUT) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after refusing
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body) if json_body else {}


def chunked(body: bytes) -> bytes:
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        f"Content-Length: {len(BODY)}\r\nTransfer-Encoding: chunked\r\n",
        f"Transfer-Encoding: chunked\r\nContent-Length: {len(BODY)}\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
    ],
    ids=["length-then-chunked", "chunked-then-length", "chunked-with-a-short-length"],
)
def test_transfer_encoding_with_content_length_is_refused(server: LiveServer, framing: str) -> None:
    host = urlsplit(server.url).netloc
    head = f"POST {JOBS} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{framing}\r\n"
    status, headers, body = raw_exchange(server, head.encode() + chunked(BODY))
    assert status == 400
    assert headers["connection"] == "close"
    assert body["error"]["param"] == "Content-Length"
    assert body["error"]["type"] == "invalid_request_error"
    assert "Transfer-Encoding" in body["error"]["message"]
    assert_nothing_queued(server)


def test_two_different_content_lengths_are_refused_by_the_http_parser(server: LiveServer) -> None:
    host = urlsplit(server.url).netloc
    head = f"POST {JOBS} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(BODY)}\r\nContent-Length: 4\r\n\r\n"
    status, _, _ = raw_exchange(server, head.encode() + BODY, json_body=False)
    assert status == 400  # h11 answers before the app is called (equal ones it reads as one)
    assert_nothing_queued(server)


def test_content_length_twice_is_refused_where_a_parser_passes_it_on() -> None:
    called = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        raise AssertionError("the body must not be read")

    scope = {"type": "http", "headers": [(b"content-length", b"5"), (b"content-length", b"5")]}
    asyncio.run(OneBodyLength(app)(scope, receive, send))
    assert called == []
    assert sent[0]["status"] == 400
    error = json.loads(sent[1]["body"])["error"]
    assert error["param"] == "Content-Length"
    assert "more than one Content-Length" in error["message"]


def test_a_plain_chunked_request_is_served(server: LiveServer) -> None:
    host = urlsplit(server.url).netloc
    head = f"POST {JOBS} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    status, _, body = raw_exchange(server, head.encode() + chunked(BODY))
    assert status == 202, body
    server.wait_status(body["id"], "succeeded", timeout=TEST_TIMEOUT)
