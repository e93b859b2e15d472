"""ASGI middleware: a request id on every response (and in its log lines), one unambiguous body
length, a cap on the request body's size and on how long it may stall, security headers, and the
request's metrics and span."""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fluxserve.api.errors import error_body
from fluxserve.api.headers import DOCS_PATHS, security_headers
from fluxserve.errors import ErrorCode, PayloadTooLarge, error_status
from fluxserve.numbers import MAX_CHARS
from fluxserve.telemetry import context
from fluxserve.telemetry.metrics import Metrics
from fluxserve.telemetry.tracing import Tracer

_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
log = logging.getLogger("fluxserve.api")


class RequestId:
    """Echo a sane client ``x-request-id`` or make one; it is on every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _CLIENT_REQUEST_ID.fullmatch(sent) else "req_" + secrets.token_hex(12)
        scope.setdefault("state", {})["request_id"] = request_id
        token = context.request_id.set(request_id)  # on this request's log lines

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            context.request_id.reset(token)


UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route matched (a 404): never its raw path, which a client chooses."""


class Observed:
    """Count each request by method, route template and status class; with tracing on, a span around it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, tracer: Tracer) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: an error that escapes is answered 500 outside

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"]
        with self.tracer.request(method) as span:
            try:
                await self.app(scope, receive, noted)
            finally:
                route = route_template(scope)
                self.metrics.http_request(method, route, status)
                span.finish(method, route, status)


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request (``/v1/jobs/{job_id}``)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class BodyLimit:
    """Refuse bodies over ``max_bytes``: at once by Content-Length, else while they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"the request body is larger than the server's limit of {self.max_bytes / 1024 / 1024:g} MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        # bytes.isdigit() is ASCII only; the length cap keeps int() from a long string's cost (and its ValueError).
        if length is not None and length.isdigit() and (len(length) > MAX_CHARS or int(length) > self.max_bytes):
            await self._refuse(scope, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self._message())
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await refuse(send, ErrorCode.PAYLOAD_TOO_LARGE, self._message())


class OneBodyLength:
    """Refuse a request whose body length is ambiguous: Transfer-Encoding and Content-Length
    together, or Content-Length twice. A proxy in front may read its body differently and
    smuggle a second request in it; the server's own HTTP parser may let it through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (message := _ambiguous_length(scope["headers"])) is not None:
            # unread: nothing of its body is taken for a request
            await refuse(send, ErrorCode.INVALID_REQUEST, message, param="Content-Length")
            return
        await self.app(scope, receive, send)


def _ambiguous_length(headers: list[tuple[bytes, bytes]]) -> str | None:
    names = [name.lower() for name, _ in headers]
    if b"transfer-encoding" in names and b"content-length" in names:
        return "the request has both Transfer-Encoding and Content-Length headers; send one"
    if names.count(b"content-length") > 1:
        return "the request has more than one Content-Length header; send one"
    return None


async def refuse(send: Send, code: ErrorCode, message: str, *, param: str | None = None) -> None:
    """Answer with an error in the API's shape without reading the request, and close the connection."""
    status = error_status(code).status
    payload = json.dumps(error_body(code, message, param=param)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@dataclass
class _Exchange:
    """Where one request stands, for :class:`BodyTimeout`."""

    body_done: bool = False
    response_started: bool = False
    timed_out: bool = False


class BodyTimeout:
    """Answer 408 and close the connection when the body stops arriving for ``seconds`` while the app waits for it.

    Only waits for more of an incomplete body are timed: once the body is complete, ``receive``
    waits for the client to disconnect (as a request waiting for its job does) for as long as
    it takes. The app then sees a disconnect; what it sends afterwards is dropped.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange()

        async def timed_receive() -> Message:
            if exchange.body_done:
                return await receive()
            message: Message | None = None
            with anyio.move_on_after(self.seconds):
                message = await receive()
            if message is None:
                await self._give_up(exchange, send)
                return {"type": "http.disconnect"}
            exchange.body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            if exchange.timed_out:
                return
            exchange.response_started = exchange.response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not exchange.timed_out:
                raise
            log.debug("a request whose body stalled ended with an error", exc_info=True)

    async def _give_up(self, exchange: _Exchange, send: Send) -> None:
        exchange.body_done = True
        answered = exchange.timed_out or exchange.response_started
        exchange.timed_out = True
        if answered:  # a response under way cannot become a 408: the connection just ends
            return
        message = (
            f"the request body stopped arriving for {self.seconds:g} s; send the whole body without pausing, "
            "then try again"
        )
        await refuse(send, ErrorCode.REQUEST_TIMEOUT, message)


class SecurityHeaders:
    """Headers that stop browsers from sniffing, framing, or leaking URLs (signed image links) in referrers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                wanted = security_headers(html=html, docs=docs)
                headers += [(name, value) for name, value in wanted if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
