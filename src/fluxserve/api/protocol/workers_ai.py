"""Cloudflare Workers AI's run endpoint as fluxserve answers it: the v4 envelope and its error codes.

``POST /client/v4/accounts/{account}/ai/run/@cf/black-forest-labs/{model}`` answers
``{"result": {"image": base64}, "success": true, "errors": [], "messages": []}``; an error is the same
envelope with ``success: false``, ``result: null`` and ``errors: [{"code", "message"}]``, under
fluxserve's status code. Facts from Cloudflare's Workers AI model, errors and limits pages.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from fluxserve.errors import ErrorCode

MODEL_PREFIX = "@cf/black-forest-labs/"

FIELDS = frozenset({"prompt", "steps", "guidance", "width", "height", "seed"})
"""The text fields Workers AI's FLUX models take (FLUX.1 [schnell]: prompt, steps, seed)."""
IMAGE_FIELDS = tuple(f"input_image_{index}" for index in range(4))
"""FLUX.2's reference image parts."""

INVALID_INPUT = 5007
"""Cloudflare's documented invalid-input codes are 3003, 5004 and 5007; 5007 is the schema error."""
AUTHENTICATION_ERROR = 10000
"""Cloudflare's API-wide code for a missing or bad token."""
BY_STATUS = {
    400: INVALID_INPUT,
    401: AUTHENTICATION_ERROR,
    403: AUTHENTICATION_ERROR,
    404: 3042,  # invalid model
    408: 3007,  # timeout
    413: 3006,  # request too large
    415: INVALID_INPUT,
    429: 3040,  # out of capacity: try again later
}
BY_CODE = {
    ErrorCode.QUOTA_EXCEEDED: 3036,  # the daily allocation is used up
    ErrorCode.MODERATION_BLOCKED: 3030,  # an NSFW input or output
}
SERVER_ERROR = 3043
"""Our choice for 5xx (Cloudflare documents no code for its own failures)."""


def cloudflare_code(code: ErrorCode, status: int) -> int:
    """The Cloudflare error code for a fluxserve error answered with ``status``."""
    if code in BY_CODE:
        return BY_CODE[code]
    return BY_STATUS.get(status, SERVER_ERROR if status >= 500 else INVALID_INPUT)


class CloudflareError(BaseModel):
    code: int
    message: str


class RunResult(BaseModel):
    image: str = Field(description="The image, base64 (PNG; JPEG from FLUX.1 [schnell]).")


class RunEnvelope(BaseModel):
    """The v4 envelope."""

    result: RunResult | None
    success: bool
    errors: list[CloudflareError] = Field(default_factory=list)
    messages: list[str] = Field(default_factory=list)


def error_envelope(code: ErrorCode, message: str, status: int) -> dict[str, object]:
    """Cloudflare's error body for a fluxserve error."""
    error = CloudflareError(code=cloudflare_code(code, status), message=message)
    return RunEnvelope(result=None, success=False, errors=[error]).model_dump(mode="json")
