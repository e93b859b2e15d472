"""Encode generated images as PNG, JPEG or WebP, with their generation parameters inside.

Fast settings by default: PNG through fluxserve's own writer (ISA-L deflate), JPEG at quality
90, WebP at quality 85 with libwebp's fastest method. ``compression`` follows the OpenAI API's
``output_compression`` (0-100): for JPEG and WebP it is 100 minus the quality; for PNG it picks
the deflate level (0 = fastest, 100 = smallest).

Every file carries a JSON object of its parameters (prompt, model, seed, steps, guidance, size,
fluxserve version): in an iTXt chunk ``parameters`` for PNG, and for JPEG and WebP in XMP
(``fluxserve:parameters``, UTF-8) and in EXIF (``ImageDescription``, ASCII-escaped JSON).
"""

from __future__ import annotations

import html
import io
import json
import re
from enum import StrEnum
from typing import Any

from PIL import Image

from fluxserve import __version__
from fluxserve.errors import InvalidRequest
from fluxserve.imaging.png import encode_png


class ImageFormat(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"

    @property
    def extension(self) -> str:
        return "jpg" if self is ImageFormat.JPEG else self.value

    @classmethod
    def parse(cls, value: str, *, param: str = "output_format") -> ImageFormat:
        normalised = value.strip().lower()
        normalised = "jpeg" if normalised == "jpg" else normalised
        try:
            return cls(normalised)
        except ValueError:
            raise InvalidRequest(f"{param} {value!r} is not supported; use png, jpeg or webp", param=param) from None


DEFAULT_PNG_LEVEL = 1
DEFAULT_JPEG_QUALITY = 90
DEFAULT_WEBP_QUALITY = 85

_EXIF_SOFTWARE = 0x0131
_EXIF_DESCRIPTION = 0x010E
_XMP_ATTR = re.compile(rb'fluxserve:parameters="([^"]*)"')


def _xmp(parameters_json: str) -> bytes:
    value = html.escape(parameters_json, quote=True)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:fluxserve="https://github.com/fluxserve/ns/1.0/" '
        f'fluxserve:parameters="{value}"/>'
        "</rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def _exif(parameters: dict[str, Any]) -> bytes:
    exif = Image.Exif()
    exif[_EXIF_SOFTWARE] = f"fluxserve {__version__}"
    exif[_EXIF_DESCRIPTION] = json.dumps(parameters, ensure_ascii=True, separators=(",", ":"))
    return exif.tobytes()


def check_compression(compression: int | None, *, param: str = "output_compression") -> None:
    if compression is not None and not 0 <= compression <= 100:
        raise InvalidRequest(f"{param} must be between 0 and 100, not {compression}", param=param)


def encode_image(
    image: Image.Image,
    fmt: ImageFormat,
    *,
    compression: int | None = None,
    parameters: dict[str, Any] | None = None,
) -> bytes:
    """Encode ``image``; ``parameters`` (JSON-serialisable) are embedded as metadata."""
    check_compression(compression)
    meta = {**(parameters or {}), "fluxserve_version": __version__}
    meta_json = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    if fmt is ImageFormat.PNG:
        level = DEFAULT_PNG_LEVEL if compression is None else round(compression * 9 / 100)
        text = {"parameters": meta_json, "Software": f"fluxserve {__version__}"}
        return encode_png(image, level=level, text=text)
    buffer = io.BytesIO()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if fmt is ImageFormat.JPEG:
        quality = DEFAULT_JPEG_QUALITY if compression is None else max(1, 100 - compression)
        rgb.save(buffer, "JPEG", quality=quality, exif=_exif(meta), xmp=_xmp(meta_json))
    else:
        quality = DEFAULT_WEBP_QUALITY if compression is None else 100 - compression
        rgb.save(buffer, "WEBP", quality=quality, method=0, exif=_exif(meta), xmp=_xmp(meta_json))
    return buffer.getvalue()


def read_parameters(data: bytes) -> dict[str, Any] | None:
    """The generation parameters embedded by :func:`encode_image`, or ``None``."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "PNG":
            text = image.info.get("parameters")
            return json.loads(text) if isinstance(text, str) else None
        xmp = image.info.get("xmp")
        if isinstance(xmp, bytes) and (match := _XMP_ATTR.search(xmp)):
            loaded: dict[str, Any] = json.loads(html.unescape(match.group(1).decode("utf-8")))
            return loaded
        description = image.getexif().get(_EXIF_DESCRIPTION)
        return json.loads(description) if isinstance(description, str) else None
