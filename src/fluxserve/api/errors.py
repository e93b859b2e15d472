"""The one place errors become HTTP responses, in OpenAI's error shape.

Every error body is ``{"error": {"message", "type", "param", "code"}}``; every response carries
``x-request-id``. Once a job exists for a request, a failure also says ``x-should-retry: false``
so that the official SDK does not generate the same images twice.
"""

from __future__ import annotations

import contextlib
import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from fluxserve import errors
from fluxserve.api.headers import security_headers

log = logging.getLogger("fluxserve.api")

# (status, OpenAI error type), most specific class first.
_STATUS: tuple[tuple[type[errors.FluxserveError], int, str], ...] = (
    (errors.PayloadTooLarge, 413, "invalid_request_error"),
    (errors.UnsupportedMediaType, 415, "invalid_request_error"),
    (errors.InvalidRequest, 400, "invalid_request_error"),
    (errors.AuthenticationFailed, 401, "authentication_error"),
    (errors.PermissionDenied, 403, "permission_error"),
    (errors.NotFound, 404, "invalid_request_error"),
    (errors.UnknownModel, 404, "invalid_request_error"),
    (errors.Conflict, 409, "invalid_request_error"),
    (errors.QueueFull, 429, "rate_limit_error"),
    (errors.RateLimited, 429, "rate_limit_error"),
    (errors.QuotaExceeded, 429, "insufficient_quota"),
    (errors.EngineNotReady, 503, "service_unavailable"),
    (errors.ModelUnavailable, 503, "service_unavailable"),
    (errors.GenerationCancelled, 409, "invalid_request_error"),
    (errors.ContentModerated, 400, "invalid_request_error"),
    (errors.ProviderAuthFailed, 502, "server_error"),
    (errors.ProviderOutOfCredit, 503, "service_unavailable"),
    (errors.ProviderBusy, 503, "service_unavailable"),
    (errors.ProviderRejectedRequest, 502, "server_error"),
    (errors.ProviderError, 502, "server_error"),
    (errors.GenerationError, 500, "server_error"),
    (errors.FluxserveError, 500, "server_error"),
)


def mark_job_started(request: Request, job_id: str) -> None:
    """From now on a failure must not be retried by the client: work has begun."""
    request.state.job_id = job_id


def error_body(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    request: Request,
    status: int,
    message: str,
    kind: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
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
    return JSONResponse(error_body(message, kind, param=param, code=code), status_code=status, headers=headers)


# A job that failed is reported with the status of the error that failed it (its code).
_BY_CODE: dict[str, tuple[int, str]] = {}
for _cls, _status, _kind in _STATUS:
    if "code" in vars(_cls):  # classes whose code is fixed, not chosen per instance
        _BY_CODE.setdefault(_cls.code, (_status, _kind))


def status_of(error: errors.FluxserveError) -> tuple[int, str]:
    """The HTTP status and OpenAI error type of ``error``."""
    if isinstance(error, errors.JobFailed) and error.code in _BY_CODE:
        return _BY_CODE[error.code]
    return next((s, k) for cls, s, k in _STATUS if isinstance(error, cls))


def _fluxserve_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, errors.FluxserveError)
    status, kind = status_of(error)
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
    if status >= 500:
        log.warning("request failed: %s", error)
    param = getattr(error, "param", None)
    return error_response(request, status, str(error), kind, param=param, code=error.code, headers=headers)


def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    messages = {404: "no such endpoint", 405: f"method {request.method} is not allowed here"}
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = messages.get(error.status_code) or str(error.detail)
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    code = codes.get(error.status_code, "invalid_request")
    return error_response(request, error.status_code, message, kind, code=code, headers=dict(error.headers or {}))


def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    detail = error.errors()[0]
    param = ".".join(str(p) for p in detail["loc"][1:]) or None
    message = f"{param}: {detail['msg']}"
    return error_response(request, 400, message, "invalid_request_error", param=param, code=errors.InvalidRequest.code)


def _unexpected(request: Request, error: Exception) -> JSONResponse:
    """Nothing of the exception reaches the client: its text may name paths, settings or data."""
    log_briefly(error, f"{request.method} {request.url.path}")
    # Starlette answers this from outside every middleware of ours, so the security headers come from here.
    headers = {name.decode(): value.decode() for name, value in security_headers(html=False)}
    return error_response(
        request, 500, "internal error; see the server log", "server_error", code="internal", headers=headers
    )


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
