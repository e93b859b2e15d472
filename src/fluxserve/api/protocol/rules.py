"""GET /v1/rules: the checks every request meets, published for clients (the studio among them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class PromptRules(BaseModel):
    max_chars: int = Field(description="The longest prompt, as the model receives it (a JSON prompt serialised).")
    max_depth: int = Field(description="How deeply a structured prompt's arrays and objects may nest.")
    max_values: int = Field(description="How many values a structured prompt may hold.")
    structured_schema: dict[str, Any] = Field(description="The structured JSON prompt's JSON Schema.")


class AcceptedFormat(BaseModel):
    name: str
    media_type: str


class UploadRules(BaseModel):
    max_bytes: int = Field(description="The largest reference image file, in bytes.")
    max_mb: float = Field(description="The same, in MB of 1024 x 1024 bytes.")
    max_files: int = Field(description="The most images one request may upload.")
    max_megapixels: float = Field(description="The most pixels one reference image may have, in millions.")
    min_side: int = Field(description="The shortest side a reference image may have, in pixels.")
    max_aspect_ratio: float = Field(description="How elongated a reference image may be.")
    formats: list[AcceptedFormat] = Field(description="The image formats accepted, and their media types.")


class Rules(BaseModel):
    object: Literal["rules"] = "rules"
    megapixel: int = Field(description="Pixels in a megapixel, as max_megapixels counts them.")
    max_seed: int
    max_output_megapixels: float = Field(description="Megapixels one request may ask for: n x width x height.")
    prompt: PromptRules
    uploads: UploadRules
