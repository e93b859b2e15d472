"""The images API's wire format: request fields, response bodies and stream events, as pydantic models.

The request models serve two purposes: they validate what clients send (JSON strictly, form
fields as text converted to numbers by :mod:`fluxserve.numbers`: ASCII digits only) and they
describe both body forms in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from fluxserve.api.protocol.references import BflReferenceFields
from fluxserve.errors import InvalidRequest
from fluxserve.jsonvalues import load_json
from fluxserve.numbers import MAX_WHOLE, parse_float, parse_int

QUALITY = Literal["auto", "low", "medium", "high", "xhigh", "max", "standard", "hd"]


def _range(low: int, high: int) -> dict[str, Any]:
    """Bounds for the OpenAPI document only: fluxserve's own checks give the better messages."""
    return {"minimum": low, "maximum": high}


WHOLE_FIELDS = ("n", "width", "height", "output_compression", "partial_images", "seed", "steps", "safety_tolerance")
"""The whole-number fields. Their ranges depend on the model: checked later, the same for both body forms."""
GUIDANCE_TEXT_RANGE = (-1e6, 1e6)
"""What a form's guidance text may say; the model's own range is checked later."""


def _side() -> dict[str, Any]:
    return {"minimum": 64, "maximum": 4096, "multipleOf": 16}


class LoraField(BaseModel):
    """One LoRA adapter a request applies."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        max_length=300,
        description="An adapter in the server's lora_dir (GET /v1/loras), or a Hugging Face repo id "
        "(org/name, or org/name:weights.safetensors) when the server has it or may download it.",
    )
    scale: float = Field(1.0, description="How strongly it applies, -2 to 2; 0 leaves the model as without it.")


class ImageFields(BaseModel):
    """Fields shared by generations and edits, in JSON or in a multipart form."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | dict[str, Any] | None = Field(
        None,
        description="Required. Text in any language (up to 10,000 characters), or a structured JSON prompt "
        "(an object).",
    )
    model: str | None = Field(None, description="A model this server serves (GET /v1/models); default the first.")
    n: int | None = Field(
        None, description="Number of images, 1-10. Image i uses seed + i.", json_schema_extra=_range(1, 10)
    )
    size: str | None = Field(
        None,
        description='"WIDTHxHEIGHT" or "auto" (the model\'s default, or the first reference\'s shape). '
        "Or give width and height.",
        json_schema_extra={"pattern": r"^(auto|[0-9]+x[0-9]+)$"},
    )
    width: int | None = Field(
        None,
        description="Output width in pixels: a multiple of 16 (limits: GET /v1/models).",
        json_schema_extra=_side(),
    )
    height: int | None = Field(
        None, description="Output height in pixels: a multiple of 16.", json_schema_extra=_side()
    )
    response_format: Literal["b64_json", "url"] | None = Field(None, description="Default b64_json.")
    output_format: str | None = Field(None, description="png (default), jpeg (or jpg) or webp.")
    output_compression: int | None = Field(
        None, description="0-100: quality loss for jpeg/webp, effort for png.", json_schema_extra=_range(0, 100)
    )
    quality: QUALITY | None = Field(
        None,
        description="A step preset: low = half the model's default steps, auto/medium/standard = default, "
        "high/hd = 1.5x, xhigh/max = 2x, within the model's range. Step-distilled models run their "
        "fixed steps at every quality. Send quality or steps, not both.",
    )
    background: Literal["auto", "opaque", "transparent"] | None = Field(
        None, description="FLUX makes opaque images; transparent is refused."
    )
    moderation: Literal["auto", "low"] | None = Field(None, description="Accepted; fluxserve does not moderate.")
    user: str | None = Field(None, max_length=256, description="An end-user id, recorded with the job.")
    safety_identifier: str | None = Field(None, max_length=256, description="Recorded with the job, like user.")
    stream: bool | None = Field(
        None,
        description="Images endpoints only: answer with Server-Sent Events in OpenAI's shape "
        "(image_generation.partial_image, image_generation.completed; image_edit.* for edits). Needs n=1 and "
        "b64_json.",
    )
    partial_images: int | None = Field(
        None,
        description="With stream: 0-3 early looks at the image, decoded cheaply from the latents (small, at "
        "1/8 of the output size), spread over the steps.",
        json_schema_extra=_range(0, 3),
    )
    webhook_url: str | None = Field(
        None,
        description="An http(s) URL that receives the job's events as signed POSTs (Standard Webhooks).",
        max_length=2048,
    )
    webhook_events: list[str] | str | None = Field(
        None,
        description="Which events to post: any of started, completed, failed, canceled (a list, or "
        "comma-separated in a form). Default: all four.",
    )
    seed: int | None = Field(
        None,
        description="Seed of the first image, 0 to 4294967295. Default: random.",
        json_schema_extra=_range(0, 2**32 - 1),
    )
    steps: int | None = Field(
        None,
        description="Denoising steps. Default and range: the model's (GET /v1/models).",
        json_schema_extra=_range(1, 100),
    )
    guidance: float | None = Field(None, description="Guidance scale, for models that use it.")
    safety_tolerance: int | None = Field(
        None,
        description="BFL models only: how tolerant BFL's moderation is, 0 (strictest) to 5; default 2. "
        "Refused for models without a safety filter setting.",
        json_schema_extra=_range(0, 5),
    )

    strength: float | None = Field(
        None,
        description="Models with masked editing (GET /v1/models: capabilities.masks): how far an edit may move "
        "the first image, 0 (not at all) to 1 (repainted from noise; the default with a mask). Without a mask "
        "the whole first image is edited from that starting point (image to image). The output keeps the "
        "first image's size, rounded down to a multiple of 16.",
        json_schema_extra={"minimum": 0, "maximum": 1},
    )
    loras: list[LoraField] | None = Field(
        None,
        description="LoRA adapters to apply, with scales (at most max_loras_per_request, 3 by default). "
        'In a multipart form: a JSON string such as [{"name": "style", "scale": 0.8}].',
    )

    @field_validator(*WHOLE_FIELDS)
    @classmethod
    def _within_64_bits(cls, value: int | None, info: ValidationInfo) -> int | None:
        """No body form brings a whole number past 64 bits (JSON allows any length) to the checks or the store."""
        param = info.field_name or "body"
        if value is not None and not -MAX_WHOLE <= value <= MAX_WHOLE:
            raise InvalidRequest(f"{param} is out of range; the model's limits are in GET /v1/models", param=param)
        return value


class _JsonFields(ImageFields):
    """The JSON body's fields before BFL's references (see :class:`BflReferenceFields`)."""

    input: str | dict[str, Any] | None = Field(None, description="Another name for prompt.")
    images: list[str] | None = Field(None, description="Reference images as data URLs (or base64).")


class JsonImageBody(BflReferenceFields, _JsonFields):
    """The JSON body. References are base64 strings or ``data:image/...;base64,`` URLs."""

    mask: str | None = Field(
        None,
        description="Where to edit the first image, base64 or a data URL: a PNG the size of the first image "
        "whose transparent pixels mark what to change (or plain black and white, white changes).",
    )


class FormImageBody(ImageFields):
    """The multipart body: the same fields as text, reference images as file parts."""

    image: list[bytes] | None = Field(None, description="Reference image file(s); also sent as image[].")
    input_image_0: bytes | None = Field(None, description="Reference files input_image_0, input_image_1, ...")
    mask: bytes | None = Field(
        None,
        description="A PNG the size of the first image whose transparent pixels mark what to change (or "
        "plain black and white, white changes). Models with capabilities.masks only.",
    )

    @field_validator(*WHOLE_FIELDS, mode="before")
    @classmethod
    def _whole_text(cls, value: Any, info: ValidationInfo) -> Any:
        """Form text: ASCII digits only (pydantic's lax int would take "1_0", " 5" or "+5")."""
        if not isinstance(value, str):
            return value
        return parse_int(value, param=info.field_name or "body", low=0, high=MAX_WHOLE)

    @field_validator("loras", mode="before")
    @classmethod
    def _loras_text(cls, value: Any) -> Any:
        """Form text: the JSON list, as in a JSON body."""
        if not isinstance(value, str):
            return value
        try:
            parsed = load_json(value, what="loras", root="loras")
        except InvalidRequest as error:
            raise InvalidRequest(str(error), param="loras") from None
        if not isinstance(parsed, list):
            raise InvalidRequest('loras must be a JSON list such as [{"name": "style", "scale": 0.8}]', param="loras")
        return parsed

    @field_validator("guidance", mode="before")
    @classmethod
    def _decimal_text(cls, value: Any) -> Any:
        """Form text: a plain decimal such as 4 or 4.5 (no exponent, nan or inf)."""
        if not isinstance(value, str):
            return value
        low, high = GUIDANCE_TEXT_RANGE
        return parse_float(value, param="guidance", low=low, high=high)

    @field_validator("strength", mode="before")
    @classmethod
    def _strength_text(cls, value: Any) -> Any:
        """Form text: a plain decimal such as 0.6; its range (0-1) is checked with the model."""
        if not isinstance(value, str):
            return value
        low, high = GUIDANCE_TEXT_RANGE
        return parse_float(value, param="strength", low=low, high=high)


def _form_schema() -> dict[str, Any]:
    schema = FormImageBody.model_json_schema()
    file = {"type": "string", "format": "binary"}
    schema["properties"]["image[]"] = {"type": "array", "items": file, "description": "Reference image files."}
    for index in range(1, 10):
        schema["properties"][f"input_image_{index}"] = dict(file)
    return schema


def images_request_body(*, required_images: bool) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of the images endpoints: both body forms."""
    json_schema = {**JsonImageBody.model_json_schema(), "required": ["prompt"]}
    form_schema = {**_form_schema(), "required": ["prompt"]}
    if required_images:
        form_schema["description"] = "Send one image, or several as image[] (or input_image_0, input_image_1, ...)."
    return {
        "required": True,
        "content": {"application/json": {"schema": json_schema}, "multipart/form-data": {"schema": form_schema}},
    }


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str = Field(description="The exact text the model received.")
    prompt: str = Field(description="The same text (the reference system's field name).")
    seed: int = Field(description="Generate with this seed and n=1 to get this image alone.")


class ImageUsage(BaseModel):
    input_megapixels: float = Field(description="Reference pixels the model saw (1 megapixel = 1024x1024).")
    output_megapixels: float
    steps: int = Field(description="Denoising steps, summed over the images.")
    images: int
    cost_usd: float | None = Field(None, description="What a hosted provider charged, where known.")


class ImagesResponse(BaseModel):
    id: str = Field(description="The job id (also in the X-Job-Id header).")
    object: Literal["image.generation", "image.edit"]
    created: int
    model: str
    data: list[ImageData]
    output_format: Literal["png", "jpeg", "webp"]
    size: str
    quality: str | None = None
    background: Literal["opaque"] = "opaque"
    usage: ImageUsage


PartialImageType = Literal["image_generation.partial_image", "image_edit.partial_image"]
CompletedImageType = Literal["image_generation.completed", "image_edit.completed"]


class ImageStreamEvent(BaseModel):
    """What every event of a streamed images request (``stream: true``) carries, as OpenAI sends it."""

    type: str
    b64_json: str
    background: Literal["opaque"]
    created_at: int
    output_format: Literal["png", "jpeg", "webp"]
    quality: str
    size: str


class PartialImageEvent(ImageStreamEvent):
    """``image_generation.partial_image`` / ``image_edit.partial_image``: a preview while it works."""

    type: PartialImageType
    partial_image_index: int


class ImageCompletedEvent(ImageStreamEvent):
    """``image_generation.completed`` / ``image_edit.completed``: the finished image, one event each."""

    type: CompletedImageType
    usage: ImageUsage
    seed: int
    id: str = Field(description="The job id.")
    safety_identifier: str | None = Field(default=None, description="The request's user, when it named one.")
