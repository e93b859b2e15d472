"""The one exception hierarchy of fluxserve.

Every error a user can cause or meet derives from :class:`FluxserveError`, carries a message
that says what to do next, and a stable ``code`` (an :class:`ErrorCode`). :data:`ERROR_STATUSES`
gives each code its HTTP status and OpenAI error type, as plain data: the HTTP layer answers every
error, streamed or not, through it; the engines and the CLI never speak HTTP.

    FluxserveError
    ├── InvalidRequest            the request cannot be served as sent (``param`` names the field)
    │   ├── InvalidPrompt         a prompt, or a field of a structured JSON prompt
    │   ├── InvalidImage          a reference image that cannot be decoded or used
    │   ├── ContentBlocked        the server's content filter refused a reference image or withheld an output
    │   │                         (``moderated`` says which: a :class:`Moderated`)
    │   ├── PayloadTooLarge       a body or upload over the configured limits
    │   ├── UnsupportedMediaType  a body that is neither JSON nor a multipart form
    │   └── InvalidVersion        a Replicate prediction's version that no served model has (a 422)
    ├── NotFound                  no such job or file (or not the caller's)
    ├── AuthenticationFailed      no API key, or one that is wrong, revoked or expired
    ├── PermissionDenied          a key without the scope or the adapter; a signed URL that is wrong or expired
    ├── Conflict                  the request contradicts the job's state or an earlier request
    │   ├── JobFinished           cancel of a job that has already finished
    │   └── IdempotencyKeyReused  the same Idempotency-Key with a different request
    ├── UnknownModel              no model of that name, repository or folder
    │   └── UnknownVersion        GET of a Replicate model version that is not served here
    ├── ModelUnavailable          a known model whose weights are not here and cannot be fetched
    ├── MissingExtra              an optional dependency group is not installed
    ├── EngineNotReady            generate() before load(); a server model still loading
    ├── QueueFull                 too much work waiting; ``retry_after`` says when to come back
    ├── RateLimited               a key's requests per minute or concurrent jobs; ``retry_after``
    ├── QuotaExceeded             a key's megapixels for the period are used; ``reset_at``
    ├── InsecureConfiguration     a server that would be open to a network by accident
    ├── StorageUnavailable        the image store (a bucket) cannot be reached or used; ``retry_after``
    ├── DatabaseUnavailable       the database cannot be reached (Postgres down); ``retry_after``
    └── GenerationError           the engine failed while generating
        ├── GenerationCancelled   the caller canceled; no partial image is returned
        ├── JobFailed             a job ended in failure (``code`` is the job's error type)
        └── ProviderError         a hosted provider failed or refused (``provider``, ``provider_code``)
            ├── ProviderAuthFailed    it refused the server's credentials: the operator's to fix
            ├── ProviderOutOfCredit   the account's allocation or credits are used up
            ├── ProviderBusy          it is out of capacity or rate-limits us; ``retry_after``
            ├── ProviderRejectedRequest  it refused a request fluxserve sent (one validation let through)
            └── ContentModerated      its moderation refused the prompt, an input or the result (``moderated``)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple


class ErrorType(StrEnum):
    """OpenAI's error ``type``: the family of an error, which clients branch on."""

    INVALID_REQUEST = "invalid_request_error"
    AUTHENTICATION = "authentication_error"
    PERMISSION = "permission_error"
    RATE_LIMIT = "rate_limit_error"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    SERVICE_UNAVAILABLE = "service_unavailable"
    SERVER = "server_error"


class ErrorCode(StrEnum):
    """Every ``code`` an error body, a streamed error event or a failed job (its ``error.type``) carries.

    The values are wire format, kept by clients and stored with failed jobs: never change one.
    ``CANCELED`` is spelled ``cancelled`` on the wire, as it always was; the job status and
    event that go with it are ``canceled``.
    """

    # The request as sent.
    INVALID_REQUEST = "invalid_request"
    INVALID_PROMPT = "invalid_prompt"
    INVALID_IMAGE = "invalid_image"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    REQUEST_TIMEOUT = "request_timeout"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    MODEL_NOT_FOUND = "model_not_found"
    INVALID_VERSION = "invalid_version"
    """A Replicate prediction's ``version`` that no served model has (a 422, as Replicate answers it)."""
    # Who is asking.
    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    REVOKED_API_KEY = "revoked_api_key"
    EXPIRED_API_KEY = "expired_api_key"
    PERMISSION_DENIED = "permission_denied"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    ADAPTER_NOT_ALLOWED = "adapter_not_allowed"
    """A LoRA adapter the calling key may not use."""
    INVALID_SIGNATURE = "invalid_signature"
    URL_EXPIRED = "url_expired"
    # The job's state.
    CONFLICT = "conflict"
    JOB_FINISHED = "job_finished"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    CANCELED = "cancelled"
    # Capacity.
    QUEUE_FULL = "queue_full"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    CONCURRENCY_LIMIT_EXCEEDED = "concurrency_limit_exceeded"
    QUOTA_EXCEEDED = "quota_exceeded"
    ENGINE_NOT_READY = "engine_not_ready"
    MODEL_UNAVAILABLE = "model_unavailable"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    """The image store (an S3 bucket) cannot be reached or refused the server."""
    # The server.
    FLUXSERVE_ERROR = "fluxserve_error"
    MISSING_EXTRA = "missing_extra"
    INSECURE_CONFIGURATION = "insecure_configuration"
    DATABASE_UNAVAILABLE = "database_unavailable"
    """The database (Postgres) cannot be reached for now; the request may be sent again."""
    GENERATION_FAILED = "generation_failed"
    SERVER_ERROR = "server_error"
    """A job that failed unexpectedly (the server log says why)."""
    INTERNAL = "internal"
    """A request that failed unexpectedly (the server log says why)."""
    INTERRUPTED = "interrupted"
    """A hosted job the server stopped during: not sent to the provider again."""
    # Hosted providers.
    PROVIDER_ERROR = "provider_error"
    PROVIDER_AUTHENTICATION_FAILED = "provider_authentication_failed"
    PROVIDER_OUT_OF_CREDIT = "provider_out_of_credit"
    PROVIDER_BUSY = "provider_busy"
    PROVIDER_REJECTED_REQUEST = "provider_rejected_request"
    MODERATION_BLOCKED = "moderation_blocked"

    @classmethod
    def _missing_(cls, value: object) -> ErrorCode | None:
        """``canceled``, the job status's spelling, reads as ``CANCELED`` too."""
        return cls.CANCELED if value == "canceled" else None

    @classmethod
    def stored(cls, value: str | None) -> ErrorCode | None:
        """A failed job's stored error type; one this version does not know reads as ``generation_failed``."""
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            return cls.GENERATION_FAILED


class ErrorStatus(NamedTuple):
    """How an error is answered over HTTP."""

    status: int
    type: ErrorType


def _each(status: int, kind: ErrorType, *codes: ErrorCode) -> dict[ErrorCode, ErrorStatus]:
    return dict.fromkeys(codes, ErrorStatus(status, kind))


_C, _T = ErrorCode, ErrorType
ERROR_STATUSES: Mapping[ErrorCode, ErrorStatus] = MappingProxyType(
    {
        **_each(400, _T.INVALID_REQUEST, _C.INVALID_REQUEST, _C.INVALID_PROMPT, _C.INVALID_IMAGE),
        **_each(400, _T.INVALID_REQUEST, _C.MODERATION_BLOCKED),  # a provider's or our content filter refused it
        **_each(401, _T.AUTHENTICATION, _C.MISSING_API_KEY, _C.INVALID_API_KEY, _C.REVOKED_API_KEY, _C.EXPIRED_API_KEY),
        **_each(403, _T.PERMISSION, _C.PERMISSION_DENIED, _C.INSUFFICIENT_SCOPE, _C.INVALID_SIGNATURE, _C.URL_EXPIRED),
        **_each(403, _T.PERMISSION, _C.ADAPTER_NOT_ALLOWED),
        **_each(404, _T.INVALID_REQUEST, _C.NOT_FOUND, _C.MODEL_NOT_FOUND),
        **_each(405, _T.INVALID_REQUEST, _C.METHOD_NOT_ALLOWED),
        **_each(408, _T.INVALID_REQUEST, _C.REQUEST_TIMEOUT),
        **_each(422, _T.INVALID_REQUEST, _C.INVALID_VERSION),
        **_each(409, _T.INVALID_REQUEST, _C.CONFLICT, _C.JOB_FINISHED, _C.IDEMPOTENCY_KEY_REUSED, _C.CANCELED),
        **_each(413, _T.INVALID_REQUEST, _C.PAYLOAD_TOO_LARGE),
        **_each(415, _T.INVALID_REQUEST, _C.UNSUPPORTED_MEDIA_TYPE),
        **_each(429, _T.RATE_LIMIT, _C.QUEUE_FULL, _C.RATE_LIMIT_EXCEEDED, _C.CONCURRENCY_LIMIT_EXCEEDED),
        **_each(429, _T.INSUFFICIENT_QUOTA, _C.QUOTA_EXCEEDED),
        **_each(500, _T.SERVER, _C.FLUXSERVE_ERROR, _C.MISSING_EXTRA, _C.INSECURE_CONFIGURATION, _C.INTERNAL),
        **_each(500, _T.SERVER, _C.GENERATION_FAILED, _C.SERVER_ERROR, _C.INTERRUPTED),
        **_each(502, _T.SERVER, _C.PROVIDER_ERROR, _C.PROVIDER_AUTHENTICATION_FAILED, _C.PROVIDER_REJECTED_REQUEST),
        **_each(503, _T.SERVICE_UNAVAILABLE, _C.ENGINE_NOT_READY, _C.MODEL_UNAVAILABLE),
        **_each(503, _T.SERVICE_UNAVAILABLE, _C.PROVIDER_OUT_OF_CREDIT, _C.PROVIDER_BUSY),
        **_each(503, _T.SERVICE_UNAVAILABLE, _C.STORAGE_UNAVAILABLE),
        **_each(503, _T.SERVICE_UNAVAILABLE, _C.DATABASE_UNAVAILABLE),
    }
)
"""Each code's HTTP status and OpenAI error type: the one table every error response is built from."""
del _C, _T


def error_status(code: ErrorCode) -> ErrorStatus:
    """The HTTP status and OpenAI error type of an error with ``code``."""
    return ERROR_STATUSES[code]


class FluxserveError(Exception):
    """Base class: ``str(error)`` is a complete sentence for the user."""

    code: ErrorCode = ErrorCode.FLUXSERVE_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Moderated(StrEnum):
    """What a moderation refused (the side of a ``moderation_blocked`` failure); wire format, stored with jobs."""

    INPUT = "input"
    """The request: its prompt or a reference image (BFL's ``Request Moderated``)."""
    OUTPUT = "output"
    """A generated image, withheld (BFL's ``Content Moderated``)."""


class InvalidRequest(FluxserveError):
    """The request cannot be served as sent. ``param`` names the offending field."""

    code = ErrorCode.INVALID_REQUEST

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidPrompt(InvalidRequest):
    code = ErrorCode.INVALID_PROMPT


class InvalidImage(InvalidRequest):
    code = ErrorCode.INVALID_IMAGE


class ContentBlocked(InvalidRequest):
    """The server's content filter judged an image unsafe: a reference (``param`` names it) or an output,
    which is then never stored or returned."""

    code = ErrorCode.MODERATION_BLOCKED

    def __init__(self, message: str, *, moderated: Moderated, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.moderated = moderated


class PayloadTooLarge(InvalidRequest):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(InvalidRequest):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class InvalidVersion(InvalidRequest):
    """A Replicate prediction's ``version`` that no served model has, or not the named model's: a 422 with
    Replicate's title, ``Invalid version or not permitted``."""

    code = ErrorCode.INVALID_VERSION

    def __init__(self, message: str, *, param: str | None = "version") -> None:
        super().__init__(message, param=param)


class NotFound(FluxserveError):
    code = ErrorCode.NOT_FOUND


class AuthenticationFailed(FluxserveError):
    """``code``: missing_api_key, invalid_api_key, revoked_api_key or expired_api_key."""

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.INVALID_API_KEY) -> None:
        super().__init__(message)
        self.code = code


class PermissionDenied(FluxserveError):
    """``param`` names the field whose value the caller may not use, if one does."""

    def __init__(
        self, message: str, *, code: ErrorCode = ErrorCode.PERMISSION_DENIED, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class Conflict(FluxserveError):
    code = ErrorCode.CONFLICT


class JobFinished(Conflict):
    code = ErrorCode.JOB_FINISHED


class IdempotencyKeyReused(Conflict):
    code = ErrorCode.IDEMPOTENCY_KEY_REUSED


class UnknownModel(FluxserveError):
    code = ErrorCode.MODEL_NOT_FOUND
    param = "model"


class UnknownVersion(UnknownModel):
    """GET of a Replicate model version that is not served here (a 404: no such resource)."""

    param = "version"


class ModelUnavailable(FluxserveError):
    code = ErrorCode.MODEL_UNAVAILABLE


class MissingExtra(FluxserveError):
    code = ErrorCode.MISSING_EXTRA

    def __init__(self, extra: str, feature: str, missing: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra ({missing} is not installed): pip install 'fluxserve[{extra}]'"
        )
        self.extra = extra


class EngineNotReady(FluxserveError):
    code = ErrorCode.ENGINE_NOT_READY

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(FluxserveError):
    code = ErrorCode.QUEUE_FULL

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(FluxserveError):
    """``code``: rate_limit_exceeded (requests per minute) or concurrency_limit_exceeded."""

    def __init__(self, message: str, *, retry_after: int, code: ErrorCode = ErrorCode.RATE_LIMIT_EXCEEDED) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class QuotaExceeded(FluxserveError):
    """The key's quota is used until ``reset_at`` (Unix seconds); retrying sooner cannot help."""

    code = ErrorCode.QUOTA_EXCEEDED

    def __init__(self, message: str, *, reset_at: int, retry_after: int) -> None:
        super().__init__(message)
        self.reset_at = reset_at
        self.retry_after = retry_after


class InsecureConfiguration(FluxserveError):
    code = ErrorCode.INSECURE_CONFIGURATION


class StorageUnavailable(FluxserveError):
    """The image store cannot be used now: a bucket that is unreachable, missing or refuses the server."""

    code = ErrorCode.STORAGE_UNAVAILABLE

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(FluxserveError):
    """The database cannot be reached (Postgres down or restarting): nothing was done; try again."""

    code = ErrorCode.DATABASE_UNAVAILABLE

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GenerationError(FluxserveError):
    code = ErrorCode.GENERATION_FAILED


class JobFailed(GenerationError):
    """``moderated``: for ``moderation_blocked``, what was refused, when known."""

    def __init__(
        self, message: str, *, code: ErrorCode, retry_after: int | None = None, moderated: Moderated | None = None
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.retry_after = retry_after
        self.moderated = moderated


class GenerationCancelled(GenerationError):
    code = ErrorCode.CANCELED

    def __init__(self, message: str = "the generation was canceled") -> None:
        super().__init__(message)


class ProviderError(GenerationError):
    """A hosted provider failed or refused. The message is ours: never the provider's raw body."""

    code = ErrorCode.PROVIDER_ERROR

    def __init__(self, message: str, *, provider: str, provider_code: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.provider_code = provider_code


class ProviderAuthFailed(ProviderError):
    code = ErrorCode.PROVIDER_AUTHENTICATION_FAILED


class ProviderOutOfCredit(ProviderError):
    code = ErrorCode.PROVIDER_OUT_OF_CREDIT


class ProviderBusy(ProviderError):
    code = ErrorCode.PROVIDER_BUSY

    def __init__(self, message: str, *, provider: str, provider_code: str | None = None, retry_after: int = 30) -> None:
        super().__init__(message, provider=provider, provider_code=provider_code)
        self.retry_after = retry_after


class ProviderRejectedRequest(ProviderError):
    code = ErrorCode.PROVIDER_REJECTED_REQUEST


class ContentModerated(ProviderError):
    """``moderated``: what the provider refused, when its answer says (None: it does not)."""

    code = ErrorCode.MODERATION_BLOCKED

    def __init__(
        self, message: str, *, provider: str, provider_code: str | None = None, moderated: Moderated | None = None
    ) -> None:
        super().__init__(message, provider=provider, provider_code=provider_code)
        self.moderated = moderated
