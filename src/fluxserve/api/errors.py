"""The one place errors become HTTP responses, in OpenAI's error shape.

Every error body is ``{"error": {"message", "type", "param", "code"}}``, its status and type those
of its code in :data:`fluxserve.errors.ERROR_STATUSES`, streamed or not; every response carries
``x-request-id``. Once a job exists for a request, a failure also says ``x-should-retry: false``
so that the official SDK does not generate the same images twice.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from fluxserve import errors
from fluxserve.api.headers import security_headers
from fluxserve.api.protocol.replicate import is_replicate_path
from fluxserve.errors import ErrorCode, ErrorStatus, error_status

log = logging.getLogger("fluxserve.api")


def mark_job_started(request: Request, job_id: str) -> None:
    """From now on a failure must not be retried by the client: work has begun."""
    request.state.job_id = job_id


ErrorShape = Callable[[ErrorCode, str, int], dict[str, object]]
"""Another API surface's error body (BFL's ``detail``, Cloudflare's envelope): code, message, status -> body."""


def use_error_shape(request: Request, shape: ErrorShape) -> None:
    """Answer this request's errors in ``shape`` (a surface's router sets it as its first dependency)."""
    request.state.error_shape = shape


def error_body(code: ErrorCode, message: str, *, param: str | None = None) -> dict[str, object]:
    """The API's error shape; its type comes from the code, as every error response's does."""
    return {"error": {"message": message, "type": error_status(code).type, "param": param, "code": code}}


def body_of(error: errors.FluxserveError) -> dict[str, object]:
    """The error body that answers ``error``, in a response or a streamed error event."""
    return error_body(error.code, str(error), param=getattr(error, "param", None))


def error_response(
    request: Request,
    code: ErrorCode,
    message: str,
    *,
    status: int | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response; its status is the code's unless ``status`` says otherwise."""
    headers = dict(headers or {})
    job_id = getattr(request.state, "job_id", None)
    if job_id is not None:
        headers["x-should-retry"] = "false"
        headers["x-job-id"] = job_id
    # The RequestId middleware stamps every response it sees, but the 500 handler answers from
    # Starlette's outermost middleware, outside it: so errors carry the id themselves.
    request_id = getattr(request.state, "request_id", None)
    if request_id is not None:
        headers["x-request-id"] = request_id
    status = status or error_status(code).status
    shape: ErrorShape | None = getattr(request.state, "error_shape", None)
    if shape is not None:  # a surface with its own error body (BFL's, Workers AI's)
        return JSONResponse(shape(code, message, status), status_code=status, headers=headers)
    if is_replicate_path(request.url.path):  # Replicate's clients read problem details
        return replicate_problem(code, message, status=status, param=param, headers=headers)
    return JSONResponse(error_body(code, message, param=param), status_code=status, headers=headers)


REPLICATE_TITLES = {ErrorCode.INVALID_VERSION: "Invalid version or not permitted"}
"""Replicate's own ``title`` where clients may match it; every other problem's title is its code."""


def replicate_problem(
    code: ErrorCode, message: str, *, status: int, param: str | None, headers: dict[str, str]
) -> JSONResponse:
    """Replicate's error shape; a prediction's ``input`` that does not validate is a 422, as there."""
    if param is not None and param.startswith("input.") and status == 400:
        status = 422
    title = REPLICATE_TITLES.get(code, code.value)
    body = {"title": title, "detail": message, "status": status, "param": param}
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def status_of(error: errors.FluxserveError) -> ErrorStatus:
    """The HTTP status and OpenAI error type of ``error``: those of its code (a failed job's: its error type)."""
    return error_status(error.code)


def _fluxserve_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, errors.FluxserveError)
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    if isinstance(error, errors.Conflict | errors.QuotaExceeded):
        # The SDK retries 409 and 429 at once; the same request would be refused again.
        headers["x-should-retry"] = "false"
    if isinstance(error, errors.QuotaExceeded):
        headers["x-quota-reset"] = str(error.reset_at)
    if isinstance(error, errors.AuthenticationFailed):
        headers["www-authenticate"] = 'Bearer realm="fluxserve"'
    if status_of(error).status >= 500:
        log.warning("request failed: %s", error)
    param = getattr(error, "param", None)
    return error_response(request, error.code, str(error), param=param, headers=headers)


def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    messages = {404: "no such endpoint", 405: f"method {request.method} is not allowed here"}
    codes = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}
    message = messages.get(error.status_code) or str(error.detail)
    other = ErrorCode.INVALID_REQUEST if error.status_code < 500 else ErrorCode.INTERNAL
    code = codes.get(error.status_code, other)
    return error_response(request, code, message, status=error.status_code, headers=dict(error.headers or {}))


def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    detail = error.errors()[0]
    param = ".".join(str(p) for p in detail["loc"][1:]) or None
    message = f"{param}: {detail['msg']}"
    return error_response(request, ErrorCode.INVALID_REQUEST, message, param=param)


def _unexpected(request: Request, error: Exception) -> JSONResponse:
    """Nothing of the exception reaches the client: its text may name paths, settings or data."""
    log_briefly(error, f"{request.method} {request.url.path}")
    # Starlette answers this from outside every middleware of ours, so the security headers come from here.
    headers = {name.decode(): value.decode() for name, value in security_headers(html=False)}
    return error_response(request, ErrorCode.INTERNAL, "internal error; see the server log", headers=headers)


TRACEBACK_FRAMES = 8
"""How many of an unexpected error's innermost frames the log shows (a RecursionError has thousands)."""


def log_briefly(error: BaseException, where: str) -> None:
    """Log an unexpected error once: a line saying what and where, then its innermost frames."""
    frames = "".join(traceback.format_exception(error, limit=-TRACEBACK_FRAMES, chain=False))
    summary = str(error)[:300]
    log.error("unexpected error on %s: %s: %s\n%s", where, type(error).__name__, summary, frames.rstrip())


class LoggedOnce:
    """The outermost ASGI layer: an error that reached Starlette's 500 handler has been answered and
    logged there, so it is not raised on to the server, which would log it again in full."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with contextlib.suppress(Exception):
            await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.FluxserveError, _fluxserve_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
