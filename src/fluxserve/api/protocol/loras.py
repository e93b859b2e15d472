"""GET /v1/loras: the LoRA adapters a request may name, and which model family each is for."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LoraCard(BaseModel):
    object: Literal["lora"] = "lora"
    id: str = Field(description="The name to send in loras[].name.")
    family: str | None = Field(
        description="flux.2 (FLUX.2 [klein] and [dev]) or flux.1; null when the file's tensor names do not say "
        "(the model checks it when it is first used)."
    )
    bytes: int


class LoraList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LoraCard]
    max_per_request: int = Field(description="How many adapters one request may combine.")
    min_scale: float
    max_scale: float
