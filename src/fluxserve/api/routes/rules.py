"""GET /v1/rules: the checks the server makes on every request, published so that clients
(the studio page among them) check input with the server's rules instead of copies of them.

Per-model rules (sizes, steps, guidance, references) are in each model's capabilities, in
/v1/models; these are the rules every model shares. The structured prompt's JSON Schema is
:class:`~fluxserve.prompts.structured.StructuredPrompt`'s own, plus the hex colour rule that a
validator function makes and pydantic cannot describe: ``pattern`` and ``x-message`` on each
colour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast, get_args

from fastapi import APIRouter, Depends
from PIL import Image
from pydantic import AfterValidator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from fluxserve.api.auth import caller
from fluxserve.api.deps import SettingsDep
from fluxserve.api.openapi import error_responses
from fluxserve.api.protocol.rules import AcceptedFormat, PromptRules, Rules, UploadRules
from fluxserve.engines.validation import MAX_SEED, MEGAPIXEL, REFERENCE_MAX_ASPECT, REFERENCE_MIN_SIDE
from fluxserve.imaging.decode import ACCEPTED_FORMATS
from fluxserve.prompts.structured import (
    MAX_PROMPT_CHARS,
    MAX_PROMPT_DEPTH,
    MAX_PROMPT_VALUES,
    Colour,
    StructuredPrompt,
)
from fluxserve.settings import Settings

router = APIRouter(tags=["models"], dependencies=[Depends(caller)])

COLOUR_PATTERN = "^(?!#)|^#[0-9A-Fa-f]{6}$"
"""Text that does not start with '#', or #RRGGBB: the colour rule as a JSON Schema pattern."""
_NAMES = {"WEBP": "WebP"}
_check_colour = cast(
    "Callable[[str], str]", next(arg.func for arg in get_args(Colour) if isinstance(arg, AfterValidator))
)


def _colour_message() -> str:
    """The server's own message for a bad colour, without the value it quotes first."""
    try:
        _check_colour("#")
    except ValueError as error:
        return str(error).removeprefix(f"{'#'!r} ")
    raise AssertionError("'#' is not a colour")  # pragma: no cover


class _WithColours(GenerateJsonSchema):
    def function_after_schema(self, schema: core_schema.AfterValidatorFunctionSchema) -> JsonSchemaValue:
        out = super().function_after_schema(schema)
        if schema["function"]["function"] is _check_colour:
            out = {**out, "pattern": COLOUR_PATTERN, "x-message": _colour_message()}
        return out


def structured_prompt_schema() -> dict[str, Any]:
    return StructuredPrompt.model_json_schema(schema_generator=_WithColours)


def _formats() -> list[AcceptedFormat]:
    Image.init()  # loads the plugins that fill Image.MIME
    return [AcceptedFormat(name=_NAMES.get(name, name), media_type=Image.MIME[name]) for name in ACCEPTED_FORMATS]


def rules_of(settings: Settings) -> Rules:
    return Rules(
        megapixel=MEGAPIXEL,
        max_seed=MAX_SEED,
        max_output_megapixels=settings.max_output_megapixels,
        prompt=PromptRules(
            max_chars=MAX_PROMPT_CHARS,
            max_depth=MAX_PROMPT_DEPTH,
            max_values=MAX_PROMPT_VALUES,
            structured_schema=structured_prompt_schema(),
        ),
        uploads=UploadRules(
            max_bytes=settings.max_upload_bytes,
            max_mb=settings.max_upload_mb,
            max_files=settings.max_uploads,
            max_megapixels=settings.max_upload_megapixels,
            min_side=REFERENCE_MIN_SIDE,
            max_aspect_ratio=REFERENCE_MAX_ASPECT,
            formats=_formats(),
        ),
    )


@router.get(
    "/v1/rules",
    summary="The rules every request is checked against",
    response_model=Rules,
    responses=error_responses(401),
)
async def get_rules(settings: SettingsDep) -> Rules:
    return rules_of(settings)
