"""Structured JSON prompts for FLUX.2.

A prompt may be a JSON object instead of text. It is checked against a schema that covers the
one Cloudflare publishes for FLUX.2 (``scene``, ``subjects``, ``style``, ``color_palette``,
``lighting``, ``mood``, ``background``, ``composition``, ``camera``, ``effects``); keys the
schema does not name are kept, because real prompts carry more (``environment``, ``text``...).
The model receives a compact serialisation that depends only on the object's content: known
keys in schema order, then unknown keys sorted, no whitespace, non-ASCII text as is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from fluxserve.errors import InvalidPrompt, InvalidRequest
from fluxserve.jsonvalues import check_value, is_unicode

MAX_PROMPT_CHARS = 10_000
MAX_PROMPT_DEPTH = 8
"""How deeply a structured prompt's arrays and objects may nest (the schema's own need 3 levels)."""
MAX_PROMPT_VALUES = 2_000
"""How many values a structured prompt may hold, counted before it is validated or serialised."""
_HEX = re.compile(r"#[0-9A-Fa-f]{6}")


def _colour(value: str) -> str:
    if value.startswith("#") and not _HEX.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid hex colour; write it as #RRGGBB, for example #FF8800")
    return value


Colour = Annotated[StrictStr, AfterValidator(_colour)]
Text = Annotated[StrictStr, Field(min_length=1)]
Number = StrictInt | StrictFloat


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Subject(_Open):
    type: Text | None = None
    description: Text
    pose: Text | None = None
    position: Literal["foreground", "midground", "background"] | None = None
    color: Colour | None = None


class Camera(_Open):
    angle: Text | None = None
    distance: Text | None = None
    focus: Text | None = None
    lens: Text | Number | None = None
    f_number: Text | Number | None = Field(default=None, alias="f-number")
    iso: Text | Number | None = Field(default=None, alias="ISO")


class StructuredPrompt(_Open):
    scene: Text
    subjects: list[Subject] = Field(min_length=1)
    style: Text | None = None
    color_palette: list[Colour] | None = Field(default=None, min_length=1, max_length=16)
    lighting: Text | None = None
    mood: Text | None = None
    background: Text | None = None
    composition: Text | None = None
    camera: Camera | None = None
    effects: list[Text] | None = None


def _json_path(loc: tuple[int | str, ...], root: str) -> str:
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _first_error(error: ValidationError, root: str) -> InvalidPrompt:
    detail = error.errors(include_url=False)[0]
    loc = tuple(p for p in detail["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # Union members show up as extra path parts ("str", "int"); drop what is not a real key.
    loc = tuple(p for p in loc if isinstance(p, int) or not p.startswith(("constrained-", "str", "int", "float")))
    path = _json_path(loc, root)
    kind = detail["type"]
    if kind == "missing":
        message = f"{path} is required"
    elif kind == "value_error":
        message = f"{path}: {detail['ctx']['error']}"
    else:
        message = f"{path}: {detail['msg'][0].lower()}{detail['msg'][1:]}"
    return InvalidPrompt(f"invalid structured prompt: {message}", param=path)


def _ordered(model: BaseModel) -> dict[str, Any]:
    """Known fields in schema order, then extra keys sorted; nested models likewise; None dropped."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is not None:
            out[info.alias or name] = _plain(value)
    extra = model.model_extra or {}
    for key in sorted(extra):
        out[key] = _plain(extra[key])
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _ordered(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(value[k]) for k in sorted(value)}
    return value


def serialise(prompt: StructuredPrompt) -> str:
    return json.dumps(_ordered(prompt), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def check_shape(value: Mapping[str, Any], *, root: str = "prompt") -> None:
    """Refuse a structured prompt that nests too deeply, is too large, holds a number that is not
    finite or text that is not valid Unicode, before any work is done on it."""
    try:
        check_value(dict(value), root=root, max_depth=MAX_PROMPT_DEPTH, max_elements=MAX_PROMPT_VALUES)
    except InvalidRequest as error:
        raise InvalidPrompt(f"invalid structured prompt: {error}", param=error.param) from None


def parse_structured(value: Mapping[str, Any], *, root: str = "prompt") -> StructuredPrompt:
    check_shape(value, root=root)
    try:
        return StructuredPrompt.model_validate(dict(value))
    except ValidationError as error:
        raise _first_error(error, root) from None


def prompt_text(value: object, *, param: str = "prompt") -> str:
    """The text the model receives for a prompt given as text or as a JSON object.

    Text passes through untouched (any language); an object is validated and serialised.
    """
    if isinstance(value, Mapping):
        text = serialise(parse_structured(value, root=param))
    elif isinstance(value, str):
        text = value
        if not is_unicode(text):
            raise InvalidPrompt(
                f"{param} is not valid Unicode text (it holds a lone surrogate such as \\ud800); send UTF-8 text",
                param=param,
            )
    else:
        raise InvalidPrompt(f"{param} must be text or a JSON object, not {type(value).__name__}", param=param)
    if not text.strip():
        raise InvalidPrompt(f"{param} is empty; describe the image you want", param=param)
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidPrompt(f"{param} is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}", param=param)
    return text
