"""ASGI middleware: a request id on every response, a cap on the request body's size, security headers."""

from __future__ import annotations

import json
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fluxserve.api.errors import error_body
from fluxserve.errors import PayloadTooLarge
from fluxserve.numbers import MAX_CHARS

_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


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
        body = json.dumps(error_body(self._message(), "invalid_request_error", code=PayloadTooLarge.code)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# The studio page runs only its own scripts and styles and talks only to this server.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Everything else is data, never a document to render.
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"
# FastAPI's interactive docs load Swagger UI and ReDoc from a CDN: no policy of ours there.
_DOCS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def security_headers(*, html: bool, docs: bool = False) -> list[tuple[bytes, bytes]]:
    """The headers every response carries: a page's policy for HTML, the data policy otherwise, none on the docs."""
    wanted = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if not docs:
        wanted.append((b"content-security-policy", (PAGE_POLICY if html else DATA_POLICY).encode()))
    return wanted


class SecurityHeaders:
    """Headers that stop browsers from sniffing, framing, or leaking URLs (signed image links) in referrers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in _DOCS

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
