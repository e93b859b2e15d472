"""Read an images request, JSON or multipart, into checked fields and raw reference images.

Both body forms end as the same :class:`ImageRequest`. JSON is typed strictly (a number where a
string belongs is an error, never a 500); form fields arrive as text and are converted to the
field's type. Reference images may come in every form clients already send:

- multipart: ``image`` / ``image[]`` (OpenAI), ``input_image_0`` .. ``input_image_N`` (the
  reference system);
- JSON: ``images`` (data URLs, the reference system) or ``input_image``, ``input_image_2`` ..
  ``input_image_8`` (base64 or data URL, BFL).

Only one of these forms per request, so that "image 1, image 2" in a prompt is unambiguous. In a
multipart form an image field may also be text: base64 or a ``data:image/...;base64,`` URL, line-
wrapped or not (as the ``base64`` tool writes it), read exactly as in JSON. A field fluxserve does
not know, or of the wrong kind (a file where text belongs), is refused: nothing is ignored.
Images are only collected here; decoding happens later, off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from fluxserve.api.protocol.images import FormImageBody, ImageFields, JsonImageBody
from fluxserve.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from fluxserve.jsonvalues import load_json
from fluxserve.settings import Settings

BodyModel = TypeVar("BodyModel", bound=BaseModel)


@dataclass(frozen=True)
class RawImage:
    """Undecoded reference bytes and the field they came from (for error messages)."""

    param: str
    data: bytes


@dataclass(frozen=True)
class ImageRequest:
    fields: ImageFields
    images: list[RawImage] = field(default_factory=list)
    mask: RawImage | None = None
    """Where the first image may change (``mask``, a file or base64 text), undecoded."""


_IMAGE_FIELD = re.compile(r"image|image\[[0-9]*\]|input_image_([0-9]{1,2})|mask")
_JSON_IMAGE = re.compile(r"input_image(?:_([2-8]))?")
_DATA_URL = re.compile(r"data:image/[a-zA-Z0-9.+-]+;base64,", re.ASCII)
_WHITESPACE = re.compile(rb"[ \t\r\n]+")


async def read_image_request(request: Request, settings: Settings) -> ImageRequest:
    """Parse the body by its content type; anything else is a 415."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        return _from_json(await request.body(), settings)
    if media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _from_form(request, settings)
    raise UnsupportedMediaType(
        f"content type {media_type or '(none)'!r} is not accepted; send application/json or multipart/form-data"
    )


# -- JSON ------------------------------------------------------------------------------------


def _from_json(body: bytes, settings: Settings) -> ImageRequest:
    data = load_json(body)
    if not isinstance(data, dict):
        raise InvalidRequest(f"the body must be a JSON object, not {type(data).__name__}")
    return image_request_from_json(data, settings)


def image_request_from_json(data: dict[str, Any], settings: Settings) -> ImageRequest:
    """A JSON body already loaded (another surface's, translated to these field names), checked."""
    fields = _validated(JsonImageBody, data, strict=True)
    mask = data.get("mask")
    raw_mask = None if mask is None else RawImage("mask", decode_base64(mask, "mask", settings))
    return ImageRequest(fields, _json_images(data, settings), raw_mask)


def _json_images(data: dict[str, Any], settings: Settings) -> list[RawImage]:
    listed = data.get("images") or []
    named = sorted(
        (int(m.group(1) or 1), key) for key in data if (m := _JSON_IMAGE.fullmatch(key)) and data[key] is not None
    )
    if listed and named:
        raise InvalidRequest("send reference images either as images or as input_image, input_image_2, ...")
    sources = [(f"images[{i}]", value) for i, value in enumerate(listed)]
    sources += [(key, data[key]) for _, key in named]
    _check_count(len(sources), settings)
    return [RawImage(param, decode_base64(value, param, settings)) for param, value in sources]


def decode_base64(value: str, param: str, settings: Settings) -> bytes:
    text = value.strip()
    if text.startswith(("http://", "https://")):
        raise InvalidRequest(
            f"{param} is a URL; fluxserve does not fetch images: send base64 or a data: URL", param=param
        )
    if text.startswith("data:"):
        match = _DATA_URL.match(text)
        if match is None:
            raise InvalidRequest(f"{param} must be a data:image/...;base64, URL", param=param)
        text = text[match.end() :]
    if len(text) * 3 // 4 > settings.max_upload_bytes * 1.05:  # line breaks add a little
        raise PayloadTooLarge(f"{param} is larger than {settings.max_upload_mb:g} MB", param=param)
    try:
        packed = _WHITESPACE.sub(b"", text.encode("ascii"))
        data = base64.b64decode(packed, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param} is not valid base64", param=param) from None
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"{param} is larger than {settings.max_upload_mb:g} MB", param=param)
    return data


# -- multipart ----------------------------------------------------------------------------------


async def _from_form(request: Request, settings: Settings) -> ImageRequest:
    async with request.form(max_files=settings.max_uploads + 2, max_fields=64) as form:
        items = list(form.multi_items())
        values: dict[str, Any] = {}
        images: list[tuple[int, RawImage]] = []
        forms: set[str] = set()
        numbers: set[int] = set()
        mask: RawImage | None = None
        for key, value in items:
            match = _IMAGE_FIELD.fullmatch(key)
            if match is None:
                if isinstance(value, UploadFile):
                    raise InvalidRequest(_file_for_text(key), param=key)
                if key in values:
                    raise InvalidRequest(f"{key} was sent more than once", param=key)
                values[key] = _form_value(key, value)
                continue
            if key == "mask":
                if mask is not None:
                    raise InvalidRequest("mask was sent more than once", param="mask")
                mask = RawImage("mask", await _image_data(value, key, settings))
                continue
            _check_count(len(images) + 1, settings)
            data = await _image_data(value, key, settings)
            numbered = match.group(1) is not None
            forms.add("input_image" if numbered else "image")
            order = int(match.group(1)) if numbered else len(images)
            if numbered and order in numbers:
                raise InvalidRequest(f"{key} was sent more than once", param=key)
            numbers.add(order)
            images.append((order, RawImage(key if numbered else f"image[{len(images)}]", data)))
    if len(forms) > 1:
        raise InvalidRequest("send reference images either as image / image[] or as input_image_0, input_image_1, ...")
    _check_count(len(images), settings)
    fields = _validated(FormImageBody, values, strict=False)
    return ImageRequest(fields, [image for _, image in sorted(images, key=lambda pair: pair[0])], mask)


async def _image_data(value: UploadFile | str, key: str, settings: Settings) -> bytes:
    if isinstance(value, UploadFile):
        return await _read_upload(value, key, settings)
    return decode_base64(value, key, settings)  # text in an image field: base64 or a data URL, as in JSON


def _file_for_text(key: str) -> str:
    if key in ImageFields.model_fields:
        return f"{key} is a text field; send it as text, not as a file"
    return f"unexpected file field {key!r}; image files go in image, image[] or input_image_0, input_image_1, ..."


async def _read_upload(upload: UploadFile, key: str, settings: Settings) -> bytes:
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"{key} is larger than {settings.max_upload_mb:g} MB", param=key)
    return data


def _form_value(key: str, value: str) -> Any:
    """A text field; a prompt that is a JSON object is a structured prompt."""
    if key in ("prompt", "input") and value.lstrip().startswith("{"):
        try:
            json.loads(value, parse_constant=float)
        except (ValueError, RecursionError):
            return value  # text that happens to start with a brace
        parsed = load_json(value, what=key, root=key)  # JSON, so held to the body's limits
        return parsed if isinstance(parsed, dict) else value
    return value


# -- shared ----------------------------------------------------------------------------------


def _check_count(count: int, settings: Settings) -> None:
    if count > settings.max_uploads:
        raise InvalidRequest(f"{count} images sent; the limit is {settings.max_uploads}", param="image")


def _validated(model: type[ImageFields], data: dict[str, Any], *, strict: bool) -> ImageFields:
    """Check ``data`` against the body model; return only the shared fields (images travel apart)."""
    if "input" in data:  # the reference system's other name for prompt
        if "prompt" in data:
            raise InvalidRequest("send prompt or input, not both", param="input")
        data["prompt"] = data.pop("input")
    try:
        checked = model.model_validate(data, strict=strict)
    except ValidationError as error:
        detail = error.errors(include_url=False)[0]
        loc = [str(part) for part in detail["loc"]]
        param = loc[0] if loc else None
        if param == "loras" and len(loc) >= 2:  # loras[0].scale, as the other checks name it
            param = "loras[" + loc[1] + "]" + "".join("." + part for part in loc[2:])
        if detail["type"] == "extra_forbidden":
            raise InvalidRequest(f"unknown field {param!r}", param=param) from None
        if param == "prompt":  # the union's branch messages say nothing useful
            raise InvalidRequest("prompt must be text or a JSON object", param=param) from None
        where = ".".join(loc) or "body"
        if param is not None and param.startswith("loras["):
            where = param
        raise InvalidRequest(f"{where}: {detail['msg']}", param=param) from None
    return ImageFields.model_validate(checked.model_dump(include=set(ImageFields.model_fields)))


def reject_unknown_query(request: Request, allowed: set[str]) -> None:
    """A query parameter the endpoint does not know is a mistake to report, not to ignore."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown query parameter {unknown[0]!r}", param=unknown[0])


def json_object_body(raw: bytes, model: type[BodyModel]) -> BodyModel:
    """A JSON object body read strictly into ``model`` (another surface's wire model); the first
    problem is a 400 naming its field, an unknown field as such."""
    data = load_json(raw)
    if not isinstance(data, dict):
        raise InvalidRequest(f"the body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as error:
        detail = error.errors(include_url=False)[0]
        param = ".".join(str(part) for part in detail["loc"]) or None
        if detail["type"] == "extra_forbidden":
            raise InvalidRequest(f"unknown field {param!r}", param=param) from None
        raise InvalidRequest(f"{param or 'body'}: {detail['msg']}", param=param) from None
