"""/v1/admin/keys: API keys as the admin API shows them (never the key, except once at creation)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fluxserve.accounts.keys import MAX_KEY_LORAS, MAX_LORA_NAME_CHARS, MAX_QUOTA_MEGAPIXELS, MAX_RATE

LoraName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LORA_NAME_CHARS)]


class KeyView(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str = Field(description="The key's first 12 characters, to recognise it; the rest is never shown again.")
    scope: Literal["generate", "admin"]
    status: Literal["active", "revoked", "expired"]
    rpm: int | None = Field(description="Requests that make a job, per rolling minute (null: no limit).")
    concurrency: int | None = Field(description="Jobs queued or running at once (null: no limit).")
    quota_megapixels: float | None = Field(description="Input plus output megapixels per quota_period.")
    quota_period: Literal["day", "month"] | None
    loras: list[str] | None = Field(
        description="The LoRA adapters this key may name in requests' loras (null: every one; [] none)."
    )
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class CreatedKey(KeyView):
    key: str = Field(description="The key itself. Shown this once: only its hash is kept.")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyView]


class NewKey(BaseModel):
    """Strict: JSON numbers only ("5", 5.0 or "inf" are refused), finite, within the limits."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    scope: Literal["generate", "admin"] = "generate"
    rpm: int | None = Field(None, ge=1, le=MAX_RATE)
    concurrency: int | None = Field(None, ge=1, le=MAX_RATE)
    quota_megapixels: float | None = Field(None, gt=0, le=MAX_QUOTA_MEGAPIXELS, allow_inf_nan=False)
    quota_period: Literal["day", "month"] | None = None
    loras: list[LoraName] | None = Field(
        None,
        max_length=MAX_KEY_LORAS,
        description="Limit the key to these LoRA adapters, named as requests name them (omit or null: every one).",
    )
    expires: str | None = Field(None, description="A date (2027-01-31, midnight UTC), an ISO date-time, or 30d / 12h.")
