"""Black Forest Labs' API as fluxserve answers it: the submit body, its answer, and the poll's answer.

Field names, statuses and shapes follow BFL's API reference (docs.bfl.ai; summed up in the README's
"BFL clients" section): ``POST /v1/{model}`` answers ``{id, polling_url, cost, input_mp, output_mp}``,
``GET /v1/get_result?id=`` answers ``{id, status, result, progress}``, errors are ``{"detail": ...}``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fluxserve.api.protocol.references import BflReferenceFields

BflStatus = Literal["Pending", "Ready", "Error", "Request Moderated", "Content Moderated", "Task not found"]


class _BflPrompt(BaseModel):
    """The field before the references (see :class:`BflReferenceFields`)."""

    prompt: str = Field(description="What to make.")


class BflRequest(BflReferenceFields, _BflPrompt):
    """The JSON body of ``POST /v1/{model}``. Unknown fields are refused, as BFL refuses them."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(default=None, description="Default: random.")
    width: int | None = Field(
        default=None, description="A multiple of 16; default the model's or the first reference's."
    )
    height: int | None = None
    steps: int | None = Field(
        default=None, description="Denoising steps (BFL: flex only; here any model that has steps)."
    )
    guidance: float | None = Field(default=None, description="Guidance scale, for models that use it.")
    output_format: Literal["jpeg", "png"] | None = Field(default=None, description="jpeg (BFL's default) or png.")
    safety_tolerance: int | None = Field(
        None,
        description="0-5. Passed on to models with a safety setting; elsewhere only BFL's default, 2, is accepted.",
    )
    prompt_upsampling: bool | None = Field(default=None, description="fluxserve never rewrites prompts: only false.")
    webhook_url: str | None = Field(
        None, max_length=2048, description="Receives the task's end in BFL's body (also signed Standard Webhooks)."
    )
    webhook_secret: str | None = Field(
        None,
        max_length=1024,
        description="Signs each delivery in X-BFL-Signature: sha256=<hex HMAC-SHA256 of the body>.",
    )


class BflSubmitted(BaseModel):
    """The answer to a submit."""

    id: str = Field(description="The task (a fluxserve job id: the jobs API knows it too).")
    polling_url: str = Field(description="GET it with the same x-key until the status is no longer Pending.")
    cost: float | None = Field(default=None, description="BFL's credits; fluxserve bills none, so null.")
    input_mp: float = Field(description="Reference megapixels the model gets.")
    output_mp: float = Field(description="Output megapixels.")


class BflResult(BaseModel):
    sample: str = Field(description="A signed URL of the image; it works without a key until it expires.")
    prompt: str
    seed: int
    start_time: float | None = None
    end_time: float | None = None
    duration: float | None = None


class BflPoll(BaseModel):
    """The answer to ``GET /v1/get_result?id=``."""

    id: str
    status: BflStatus
    result: BflResult | None = None
    progress: float | None = Field(default=None, description="0 to 1 while the image is being made.")
    details: dict[str, Any] | None = Field(
        default=None, description="Error: what went wrong (fluxserve's code, message)."
    )


class BflError(BaseModel):
    """BFL's error body, under fluxserve's status codes."""

    detail: str
