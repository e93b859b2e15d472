"""A fake of Black Forest Labs' API, served on loopback, written from the documented protocol only.

What it implements (BFL's API reference, docs.bfl.ai, as the README's "Hosted models" section sums it up):

- ``POST /v1/{endpoint}`` for the FLUX.2 endpoints, with ``x-key``; the JSON body is checked as
  documented (unknown fields, sizes, references, steps, guidance, safety_tolerance,
  output_format) and refused with 422; the answer is ``{"id", "polling_url", "cost",
  "input_mp", "output_mp"}``.
- ``GET /v1/get_result?id=...`` (the ``polling_url``), with ``x-key``: ``Pending`` for
  ``pending_polls`` polls, then the task's end: ``Ready`` with ``result.sample``, or the status a
  test asked for (``Request Moderated``, ``Content Moderated``, ``Error``, ``Task not found``).
- ``GET /delivery/{id}/sample.{ext}?sig=...``: the result, behind a signed URL that needs no key
  and expires ``sample_ttl_seconds`` after the task became Ready (then 403, as signed storage URLs do).

Its own choices, where the protocol says nothing: a missing or wrong key is a 403; error bodies
are ``{"detail": ...}``; a megapixel is 1024 x 1024 pixels; a task costs ``credits_per_megapixel``
for each megapixel in and out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

ENDPOINTS = {"flux-2-pro": 8, "flux-2-max": 8, "flux-2-flex": 8, "flux-2-klein-4b": 4, "flux-2-klein-9b": 4}
"""Each FLUX.2 endpoint and the reference images it takes."""
FLEX = "flux-2-flex"
REFERENCE_FIELDS = ["input_image", *(f"input_image_{i}" for i in range(2, 9))]
COMMON_FIELDS = {
    "prompt",
    "seed",
    "width",
    "height",
    "safety_tolerance",
    "output_format",
    "webhook_url",
    "webhook_secret",
}
FLEX_FIELDS = {"steps", "guidance", "prompt_upsampling"}
TASK_ENDS = ("Ready", "Request Moderated", "Content Moderated", "Error", "Task not found")
MEGAPIXEL = 1024 * 1024
MAX_OUTPUT_MEGAPIXELS = 4.0
PRO_MAX_INPUT_MEGAPIXELS = 9.0
HANG_LIMIT_SECONDS = 60.0


@dataclass(frozen=True)
class Submit:
    """One submit as the fake received it."""

    endpoint: str
    body: Any
    key: str | None

    @property
    def references(self) -> list[Image.Image]:
        """The reference images sent as base64, decoded, in the order of their fields (URLs are skipped)."""
        values = [self.body[name] for name in REFERENCE_FIELDS if name in self.body]
        return [_decode_image(value) for value in values if not _is_url(value)]


@dataclass
class Task:
    id: str
    body: dict[str, Any]
    end: str
    pending_left: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    polls: int = 0
    ready_at: float | None = None


@dataclass(frozen=True)
class SubmitFailure:
    status: int
    retry_after: str | None = None
    hang: bool = False


class FakeBfl:
    """The fake's state and its ASGI ``app``; tell it what to do next with the methods below."""

    def __init__(
        self,
        key: str = "bfl-test-key",
        *,
        pending_polls: int = 2,
        sample_ttl_seconds: float = 600.0,
        credits_per_megapixel: float = 3.0,
        sign: Callable[[bytes, str], bytes] | None = None,
    ) -> None:
        self.key = key
        self.sign = sign
        """Signs each result (bytes, ext) with C2PA Content Credentials, as BFL does; None: unsigned."""
        self.pending_polls = pending_polls
        self.sample_ttl_seconds = sample_ttl_seconds
        self.credits_per_megapixel = credits_per_megapixel
        self.submits: list[Submit] = []
        self.polls = 0
        self.poll_times: list[float] = []
        self.downloads = 0
        self.download_keys: list[str | None] = []
        """The x-key each download carried (it should carry none)."""
        self.tasks: dict[str, Task] = {}
        self._failures: deque[SubmitFailure] = deque()
        self._ends: deque[str] = deque()
        self._poll_failures = 0
        self._lock = threading.Lock()
        self.app = self._build()

    def reset(self, *, pending_polls: int = 2, sample_ttl_seconds: float = 600.0) -> None:
        """Forget every call, task and instruction: a fresh fake on the same address."""
        with self._lock:
            self.pending_polls, self.sample_ttl_seconds = pending_polls, sample_ttl_seconds
            self.submits, self.polls, self.poll_times, self.downloads, self.download_keys = [], 0, [], 0, []
            self.tasks = {}
            self._failures.clear()
            self._ends.clear()
            self._poll_failures = 0

    # -- what the tests tell it --------------------------------------------------------------
    def fail_next_submit(self, status: int, *, retry_after: str | None = None) -> None:
        """The next submit answers ``status`` (402, 422, 429, 500, ...) and starts no task."""
        with self._lock:
            self._failures.append(SubmitFailure(status, retry_after))

    def hang_next_submit(self) -> None:
        """The next submit never answers (until the caller gives up and disconnects)."""
        with self._lock:
            self._failures.append(SubmitFailure(0, hang=True))

    def end_next_task(self, status: str) -> None:
        """The next task ends in ``status`` instead of Ready, after its pending polls."""
        assert status in TASK_ENDS, status
        with self._lock:
            self._ends.append(status)

    def fail_next_polls(self, count: int) -> None:
        """The next ``count`` polls answer 503 (with ``Retry-After: 0``, so that retries are quick)."""
        with self._lock:
            self._poll_failures = count

    @property
    def submit_count(self) -> int:
        return len(self.submits)

    # -- the API -----------------------------------------------------------------------------
    def _build(self) -> FastAPI:
        app = FastAPI()
        app.add_api_route("/v1/get_result", self._poll, methods=["GET"])
        app.add_api_route("/delivery/{task_id}/sample.{ext}", self._download, methods=["GET"])
        app.add_api_route("/v1/{endpoint}", self._submit, methods=["POST"])
        return app

    async def _submit(self, endpoint: str, request: Request) -> Response:
        if endpoint not in ENDPOINTS:
            return _detail(404, "Not Found")
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        key = request.headers.get("x-key")
        with self._lock:
            self.submits.append(Submit(endpoint, body, key))
        if key != self.key:
            return _detail(403, "Not authenticated: invalid or missing x-key")
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            return await _fail(failure, request)
        problems = body_problems(endpoint, body)
        if problems:
            return JSONResponse({"detail": [{"loc": ["body", f], "msg": m} for f, m in problems]}, status_code=422)
        return self._start(body, request)

    def _start(self, body: dict[str, Any], request: Request) -> Response:
        with self._lock:
            end = self._ends.popleft() if self._ends else "Ready"
            task = Task(secrets.token_hex(16), body, end, self.pending_polls)
            self.tasks[task.id] = task
        base = str(request.base_url).rstrip("/")
        input_mp = sum(_megapixels(image.size) for image in Submit("", body, None).references)
        output_mp = _megapixels(_size(body))
        return JSONResponse(
            {
                "id": task.id,
                "polling_url": f"{base}/v1/get_result?id={task.id}",
                "cost": round(self.credits_per_megapixel * (input_mp + output_mp), 2),
                "input_mp": round(input_mp, 4),
                "output_mp": round(output_mp, 4),
            }
        )

    async def _poll(self, request: Request, id: str = "") -> Response:  # BFL's parameter is named id
        with self._lock:
            self.polls += 1
            self.poll_times.append(time.monotonic())
            failing = self._poll_failures > 0
            if failing:
                self._poll_failures -= 1
        if request.headers.get("x-key") != self.key:
            return _detail(403, "Not authenticated: invalid or missing x-key")
        if failing:
            return JSONResponse({"detail": "Service Unavailable"}, status_code=503, headers={"retry-after": "0"})
        with self._lock:
            task = self.tasks.get(id)
            if task is None:
                return JSONResponse({"id": id, "status": "Task not found"})
            task.polls += 1
            if task.pending_left > 0:
                task.pending_left -= 1
                return JSONResponse({"id": id, "status": "Pending", "result": None})
            if task.end != "Ready":
                return JSONResponse({"id": id, "status": task.end, "result": None})
            if task.ready_at is None:
                task.ready_at = time.monotonic()
        ext = "png" if task.body.get("output_format") == "png" else "jpeg"
        sample = f"{str(request.base_url).rstrip('/')}/delivery/{task.id}/sample.{ext}?sig={task.token}"
        return JSONResponse({"id": id, "status": "Ready", "result": {"sample": sample, "seed": task.body.get("seed")}})

    async def _download(self, task_id: str, ext: str, request: Request, sig: str = "") -> Response:
        with self._lock:
            self.downloads += 1
            self.download_keys.append(request.headers.get("x-key"))
            task = self.tasks.get(task_id)
        if task is None or task.ready_at is None or sig != task.token:
            return Response("AuthenticationFailed", status_code=403)
        if time.monotonic() > task.ready_at + self.sample_ttl_seconds:
            return Response("AuthenticationFailed: signed expiry time has passed", status_code=403)
        data = _render(task, ext)
        return Response(data if self.sign is None else self.sign(data, ext), media_type=f"image/{ext}")


def body_problems(endpoint: str, body: Any) -> list[tuple[str, str]]:
    """What BFL's validation would refuse in this body, as (field, message) pairs."""
    if not isinstance(body, dict):
        return [("body", "must be a JSON object")]
    allowed = COMMON_FIELDS | set(REFERENCE_FIELDS) | (FLEX_FIELDS if endpoint == FLEX else set())
    problems = [(name, "extra fields not permitted") for name in body if name not in allowed]
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(("prompt", "a non-empty string is required"))
    problems += _size_problems(body)
    problems += _reference_problems(endpoint, body)
    checks: list[tuple[str, Any]] = [
        ("seed", lambda v: _is_int(v)),
        ("safety_tolerance", lambda v: _is_int(v) and 0 <= v <= 5),
        ("output_format", lambda v: v in ("jpeg", "png")),
        ("webhook_url", _is_url),
        ("webhook_secret", lambda v: isinstance(v, str)),
        ("steps", lambda v: _is_int(v) and 1 <= v <= 50),
        ("guidance", lambda v: _is_number(v) and 1.5 <= v <= 10),
        ("prompt_upsampling", lambda v: isinstance(v, bool)),
    ]
    problems += [(name, "invalid value") for name, ok in checks if name in body and not ok(body[name])]
    return problems


def _size_problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for name in ("width", "height"):
        value = body.get(name)
        if value is not None and not (_is_int(value) and value >= 64 and value % 16 == 0):
            problems.append((name, "must be a whole number >= 64 and a multiple of 16"))
    if not problems and _megapixels(_size(body)) > MAX_OUTPUT_MEGAPIXELS:
        problems.append(("width", f"the output may be at most {MAX_OUTPUT_MEGAPIXELS:g} megapixels"))
    return problems


def _reference_problems(endpoint: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    names = [name for name in REFERENCE_FIELDS if name in body]
    if len(names) > ENDPOINTS[endpoint]:
        return [(names[-1], f"{endpoint} takes at most {ENDPOINTS[endpoint]} reference images")]
    total = 0.0
    for name in names:
        value = body[name]
        if _is_url(value):
            continue  # BFL fetches it; the fake does not
        try:
            total += _megapixels(_decode_image(value).size)
        except ValueError:
            return [(name, "must be a URL or a base64-encoded image")]
    if endpoint == "flux-2-pro" and total > PRO_MAX_INPUT_MEGAPIXELS:
        return [("input_image", f"at most {PRO_MAX_INPUT_MEGAPIXELS:g} megapixels of input in total")]
    return []


async def _fail(failure: SubmitFailure, request: Request) -> Response:
    if failure.hang:
        deadline = time.monotonic() + HANG_LIMIT_SECONDS
        while not await request.is_disconnected() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return _detail(504, "hung")
    headers = {} if failure.retry_after is None else {"retry-after": failure.retry_after}
    messages = {
        402: "Insufficient credits",
        422: "Unprocessable Entity",
        429: "You have reached the limit of 24 active tasks",
        500: "Internal Server Error",
    }
    # A marker a test can look for: fluxserve must never pass the provider's raw body on.
    message = f"{messages.get(failure.status, 'error')} RAW-PROVIDER-BODY"
    return JSONResponse({"detail": message}, status_code=failure.status, headers=headers)


def _detail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _size(body: dict[str, Any]) -> tuple[int, int]:
    return body.get("width") or 1024, body.get("height") or 1024


def _megapixels(size: tuple[int, int]) -> float:
    return size[0] * size[1] / MEGAPIXEL


def _decode_image(value: Any) -> Image.Image:
    if not isinstance(value, str):
        raise ValueError("not a string")
    try:
        data = base64.b64decode(value, validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy()
    except (binascii.Error, OSError) as error:
        raise ValueError("not a base64 image") from error


def _render(task: Task, ext: str) -> bytes:
    """The task's "generated" image: its size, in a colour drawn from its seed."""
    seed = task.body.get("seed") or 0
    colour = (seed % 256, seed // 256 % 256, seed // 65536 % 256)
    buffer = io.BytesIO()
    Image.new("RGB", _size(task.body), colour).save(buffer, "PNG" if ext == "png" else "JPEG")
    return buffer.getvalue()
