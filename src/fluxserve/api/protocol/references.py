"""BFL's reference image fields, which two JSON bodies take: BFL's own (``POST /v1/{model}``) and the images
API's (``POST /v1/images/...``), where a client may send references the BFL way."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

REFERENCE_FIELDS = ("input_image", *(f"input_image_{index}" for index in range(2, 9)))
"""BFL's reference image fields, in order: ``input_image``, then ``input_image_2`` .. ``input_image_8``."""


class BflReferenceFields(BaseModel):
    """``input_image``, ``input_image_2`` .. ``input_image_8``: base64 or ``data:`` URLs.

    A body lists it after the fields that come before the references (pydantic orders inherited fields
    by the bases, last first), so each body keeps its order: in its schema and in which problem of a body
    is told first.
    """

    model_config = ConfigDict(extra="forbid")

    input_image: str | None = Field(
        None, description="First reference image: base64 or a data: URL (then input_image_2 .. input_image_8)."
    )
    input_image_2: str | None = None
    input_image_3: str | None = None
    input_image_4: str | None = None
    input_image_5: str | None = None
    input_image_6: str | None = None
    input_image_7: str | None = None
    input_image_8: str | None = None

    def references(self) -> dict[str, str]:
        """The reference fields sent, by name, in BFL's order."""
        sent = self.model_dump(include=set(REFERENCE_FIELDS), exclude_none=True)
        return {name: sent[name] for name in REFERENCE_FIELDS if name in sent}
