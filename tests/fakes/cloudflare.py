"""A fake of Cloudflare Workers AI's image models, from the documented protocol only (protocols.md section 2).

``POST /client/v4/accounts/{account_id}/ai/run/{model}`` with ``Authorization: Bearer {token}``.
FLUX.2 models take multipart/form-data only (``prompt``, ``input_image_0..3`` below 512x512,
``steps`` (4 or absent for klein), ``guidance``, ``width`` and ``height`` in 256-1920, ``seed``);
FLUX.1 [schnell] takes JSON only (``prompt`` of 1-2048 characters, ``steps`` up to 8, ``seed``).
Answers are v4 envelopes; the image is a real PNG of the requested size (a JPEG from schnell).

Where the documentation says nothing, the fake guesses, and says so: a bad token or account is
401 with code 10000, a body that breaks the schema is 400 with code 5007, schnell's image is
1024x1024.

Serve ``fake.app`` with ``tests.servers.serve_in_thread``; point an engine at ``{url}/client/v4``.
Each call is counted and recorded; :meth:`FakeWorkersAI.fail_next` makes the next calls fail.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEV = "@cf/black-forest-labs/flux-2-dev"
KLEIN = ("@cf/black-forest-labs/flux-2-klein-4b", "@cf/black-forest-labs/flux-2-klein-9b")
SCHNELL = "@cf/black-forest-labs/flux-1-schnell"
IMAGE_PARTS = tuple(f"input_image_{i}" for i in range(4))
FLUX2_FIELDS = frozenset({"prompt", "steps", "guidance", "width", "height", "seed", *IMAGE_PARTS})
SCHNELL_FIELDS = frozenset({"prompt", "steps", "seed"})
INVALID_INPUT = 5007  # one of the documented invalid-input codes (3003, 5004, 5007); which one is a guess


@dataclass(frozen=True)
class Failure:
    """How the next call fails: a status and code, perhaps a Retry-After, perhaps after hanging."""

    status: int
    code: int | None = None
    retry_after: str | None = None
    hang_seconds: float = 0.0
    message: str | None = None
    """The error's message; default: ``injected failure <code>``."""


DAILY_ALLOCATION = Failure(429, 3036)
OUT_OF_CAPACITY = Failure(429, 3040)
RATE_LIMITED = Failure(429, None, retry_after="1")
RATE_LIMITED_NO_RETRY_AFTER = Failure(429, None)
TOO_LARGE = Failure(413, 3006)
TIMED_OUT = Failure(408, 3007)
INVALID = Failure(400, 3003)
NO_SUCH_MODEL = Failure(404, 3042)
PAID_ONLY = Failure(403, 5035)
UNAUTHORIZED = Failure(401, 10000)
SERVER_ERROR = Failure(500, None)
HANG = Failure(500, None, hang_seconds=5.0)
# Moderation (code 3030): the message says which side was judged NSFW.
INPUT_NSFW = Failure(400, 3030, message="AiError: Input prompt contains NSFW content (injected)")
OUTPUT_NSFW = Failure(400, 3030, message="AiError: Output image contains NSFW content (injected)")


@dataclass(frozen=True)
class Received:
    """One call as the fake saw it."""

    model: str
    content_type: str
    fields: dict[str, str] = field(default_factory=dict)
    """Text fields of a multipart body, or a JSON body's values as text."""
    images: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Image part name -> (width, height)."""
    image_types: dict[str, str] = field(default_factory=dict)
    """Image part name -> the part's content type."""


class Rejected(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeWorkersAI:
    def __init__(self, account_id: str = "acct-0123", token: str = "cf-token-secret") -> None:
        self.account_id, self.token = account_id, token
        self.calls = 0
        self.received: list[Received] = []
        self._failures: deque[Failure] = deque()
        route = Route("/client/v4/accounts/{account}/ai/run/{model:path}", self._run, methods=["POST"])
        self.app = Starlette(routes=[route])

    def fail_next(self, *failures: Failure) -> None:
        self._failures.extend(failures)

    def reset(self) -> None:
        self.calls = 0
        self.received.clear()
        self._failures.clear()

    @property
    def last(self) -> Received:
        return self.received[-1]

    async def _run(self, request: Request) -> JSONResponse:
        self.calls += 1
        if self._failures:
            return await _fail(self._failures.popleft())
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, 10000, "Authentication error")
        if request.path_params["account"] != self.account_id:
            return _error(401, 10000, "Authentication error")
        model = request.path_params["model"]
        try:
            if model == SCHNELL:
                received = await _schnell(request)
                picture = _picture(1024, 1024, received.fields.get("seed"), "JPEG")
            elif model in (DEV, *KLEIN):
                received = await _flux2(request, model)
                width = int(received.fields.get("width", "1024"))
                height = int(received.fields.get("height", "768"))
                picture = _picture(width, height, received.fields.get("seed"), "PNG")
            else:
                return _error(404, 3042, "Invalid model")
        except Rejected as rejected:
            return _error(rejected.status, rejected.code, rejected.message)
        self.received.append(received)
        return JSONResponse(
            {"success": True, "errors": [], "messages": [], "result": {"image": base64.b64encode(picture).decode()}}
        )


def _error(status: int, code: int | None, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    errors = [] if code is None else [{"code": code, "message": message}]
    body = {"success": False, "errors": errors, "messages": [], "result": None}
    return JSONResponse(body, status_code=status, headers=headers)


async def _fail(failure: Failure) -> JSONResponse:
    if failure.hang_seconds:
        await asyncio.sleep(failure.hang_seconds)
    headers = {"retry-after": failure.retry_after} if failure.retry_after is not None else None
    message = failure.message if failure.message is not None else f"injected failure {failure.code}"
    return _error(failure.status, failure.code, message, headers)


def _invalid(message: str) -> Rejected:
    return Rejected(400, INVALID_INPUT, message)


def _integer(fields: dict[str, str], name: str, low: int, high: int) -> None:
    if name not in fields:
        return
    try:
        value = int(fields[name])
    except ValueError:
        raise _invalid(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise _invalid(f"{name} must be {low}-{high}")


async def _flux2(request: Request, model: str) -> Received:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise _invalid("the body must be multipart/form-data")
    fields: dict[str, str] = {}
    images: dict[str, tuple[int, int]] = {}
    image_types: dict[str, str] = {}
    async with request.form(max_files=len(IMAGE_PARTS), max_fields=len(FLUX2_FIELDS)) as form:
        for name, value in form.multi_items():
            if name not in FLUX2_FIELDS or name in fields or name in images:
                raise _invalid(f"unexpected or repeated field {name}")
            if name in IMAGE_PARTS:
                if not isinstance(value, UploadFile):
                    raise _invalid(f"{name} must be a binary part")
                images[name] = _image_size(await value.read(), name)
                image_types[name] = value.content_type or ""
            elif isinstance(value, UploadFile):
                raise _invalid(f"{name} must be a text field")
            else:
                fields[name] = value
    if not fields.get("prompt"):
        raise _invalid("prompt is required")
    for name in ("width", "height"):
        _integer(fields, name, 256, 1920)
    _integer(fields, "seed", 0, 2**63 - 1)
    _integer(fields, "steps", 1, 1000)
    if model in KLEIN and fields.get("steps", "4") != "4":
        raise _invalid("steps is fixed at 4 for klein")
    if "guidance" in fields:
        try:
            float(fields["guidance"])
        except ValueError:
            raise _invalid("guidance must be a number") from None
    return Received(model, content_type, fields, images, image_types)


def _image_size(data: bytes, name: str) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
    except OSError:
        raise _invalid(f"{name} is not an image") from None
    if max(size) >= 512:
        raise _invalid(f"{name} must be smaller than 512x512")
    return size


async def _schnell(request: Request) -> Received:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        raise _invalid("the body must be JSON")
    try:
        body: Any = json.loads(await request.body())
    except ValueError:
        raise _invalid("the body is not JSON") from None
    if not isinstance(body, dict) or not set(body) <= SCHNELL_FIELDS:
        raise _invalid("unexpected fields")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not 1 <= len(prompt) <= 2048:
        raise _invalid("prompt must be 1-2048 characters")
    for name, low, high in (("steps", 1, 8), ("seed", 0, 2**63 - 1)):
        value = body.get(name, low)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _invalid(f"{name} must be an integer in {low}-{high}")
    return Received(SCHNELL, content_type, {key: str(value) for key, value in body.items()})


def _picture(width: int, height: int, seed: str | None, fmt: str) -> bytes:
    shade = int(seed or 0) % 200
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 80, 255 - shade)).save(buffer, fmt)
    return buffer.getvalue()
