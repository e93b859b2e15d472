"""The one exception hierarchy of fluxserve.

Every error a user can cause or meet derives from :class:`FluxserveError`, carries a message
that says what to do next, and a stable ``code``. The HTTP layer maps these classes to
statuses in one place; the engines and the CLI never speak HTTP.

    FluxserveError
    ├── InvalidRequest            the request cannot be served as sent (``param`` names the field)
    │   ├── InvalidPrompt         a prompt, or a field of a structured JSON prompt
    │   └── InvalidImage          a reference image that cannot be decoded or used
    │   ├── PayloadTooLarge       a body or upload over the configured limits
    │   └── UnsupportedMediaType  a body that is neither JSON nor a multipart form
    ├── NotFound                  no such job or file (or not the caller's)
    ├── AuthenticationFailed      no API key, or one that is wrong, revoked or expired
    ├── PermissionDenied          a key without the scope; a signed URL that is wrong or expired
    ├── Conflict                  the request contradicts the job's state or an earlier request
    │   ├── JobFinished           cancel of a job that has already finished
    │   └── IdempotencyKeyReused  the same Idempotency-Key with a different request
    ├── UnknownModel              no model of that name, repository or folder
    ├── ModelUnavailable          a known model whose weights are not here and cannot be fetched
    ├── MissingExtra              an optional dependency group is not installed
    ├── EngineNotReady            generate() before load(); a server model still loading
    ├── QueueFull                 too much work waiting; ``retry_after`` says when to come back
    ├── RateLimited               a key's requests per minute or concurrent jobs; ``retry_after``
    ├── QuotaExceeded             a key's megapixels for the period are used; ``reset_at``
    ├── InsecureConfiguration     a server that would be open to a network by accident
    └── GenerationError           the engine failed while generating
        ├── GenerationCancelled   the caller cancelled; no partial image is returned
        ├── JobFailed             a job ended in failure (``code`` is the job's error type)
        └── ProviderError         a hosted provider failed or refused (``provider``, ``provider_code``)
            ├── ProviderAuthFailed    it refused the server's credentials: the operator's to fix
            ├── ProviderOutOfCredit   the account's allocation or credits are used up
            ├── ProviderBusy          it is out of capacity or rate-limits us; ``retry_after``
            ├── ProviderRejectedRequest  it refused a request fluxserve sent (one validation let through)
            └── ContentModerated      its moderation refused the prompt, an input or the result
"""

from __future__ import annotations


class FluxserveError(Exception):
    """Base class: ``str(error)`` is a complete sentence for the user."""

    code = "fluxserve_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(FluxserveError):
    """The request cannot be served as sent. ``param`` names the offending field."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidPrompt(InvalidRequest):
    code = "invalid_prompt"


class InvalidImage(InvalidRequest):
    code = "invalid_image"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"


class NotFound(FluxserveError):
    code = "not_found"


class AuthenticationFailed(FluxserveError):
    """``code``: missing_api_key, invalid_api_key, revoked_api_key or expired_api_key."""

    def __init__(self, message: str, *, code: str = "invalid_api_key") -> None:
        super().__init__(message)
        self.code = code


class PermissionDenied(FluxserveError):
    def __init__(self, message: str, *, code: str = "permission_denied") -> None:
        super().__init__(message)
        self.code = code


class Conflict(FluxserveError):
    code = "conflict"


class JobFinished(Conflict):
    code = "job_finished"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class UnknownModel(FluxserveError):
    code = "model_not_found"
    param = "model"


class ModelUnavailable(FluxserveError):
    code = "model_unavailable"


class MissingExtra(FluxserveError):
    code = "missing_extra"

    def __init__(self, extra: str, feature: str, missing: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra ({missing} is not installed): pip install 'fluxserve[{extra}]'"
        )
        self.extra = extra


class EngineNotReady(FluxserveError):
    code = "engine_not_ready"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(FluxserveError):
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(FluxserveError):
    """``code``: rate_limit_exceeded (requests per minute) or concurrency_limit_exceeded."""

    def __init__(self, message: str, *, retry_after: int, code: str = "rate_limit_exceeded") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class QuotaExceeded(FluxserveError):
    """The key's quota is used until ``reset_at`` (Unix seconds); retrying sooner cannot help."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, reset_at: int, retry_after: int) -> None:
        super().__init__(message)
        self.reset_at = reset_at
        self.retry_after = retry_after


class InsecureConfiguration(FluxserveError):
    code = "insecure_configuration"


class GenerationError(FluxserveError):
    code = "generation_failed"


class JobFailed(GenerationError):
    def __init__(self, message: str, *, code: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class GenerationCancelled(GenerationError):
    code = "cancelled"

    def __init__(self, message: str = "the generation was cancelled") -> None:
        super().__init__(message)


class ProviderError(GenerationError):
    """A hosted provider failed or refused. The message is ours: never the provider's raw body."""

    code = "provider_error"

    def __init__(self, message: str, *, provider: str, provider_code: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.provider_code = provider_code


class ProviderAuthFailed(ProviderError):
    code = "provider_authentication_failed"


class ProviderOutOfCredit(ProviderError):
    code = "provider_out_of_credit"


class ProviderBusy(ProviderError):
    code = "provider_busy"

    def __init__(self, message: str, *, provider: str, provider_code: str | None = None, retry_after: int = 30) -> None:
        super().__init__(message, provider=provider, provider_code=provider_code)
        self.retry_after = retry_after


class ProviderRejectedRequest(ProviderError):
    code = "provider_rejected_request"


class ContentModerated(ProviderError):
    code = "moderation_blocked"
