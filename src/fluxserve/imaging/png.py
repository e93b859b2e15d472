"""A fast PNG writer for 8-bit RGB images.

Pillow's PNG encoder costs about 100 ms per megapixel at its fastest level on one core. This
writer applies the PNG "up" filter to all rows with numpy and deflates with ISA-L (levels 0-3,
about 10 ms per megapixel) or the standard zlib (levels 4-9, smaller and slower). The output is
a standard PNG that every decoder reads.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from isal import isal_zlib
from PIL import Image

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _text_chunk(key: str, value: str) -> bytes:
    """An uncompressed iTXt chunk: UTF-8 text under a Latin-1 keyword."""
    return _chunk(b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + value.encode("utf-8"))


def _filtered_rows(pixels: np.ndarray) -> bytes:
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    out = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = _FILTER_UP
    out[0, 0] = 0  # the first row has no row above it
    out[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    return out.tobytes()


def _deflate(data: bytes, level: int) -> bytes:
    if level <= 3:
        return bytes(isal_zlib.compress(data, level))
    return zlib.compress(data, level)


def encode_png(image: Image.Image, *, level: int = 1, text: dict[str, str] | None = None) -> bytes:
    """Encode an RGB image as PNG. ``level`` 0-9 trades speed for size; ``text`` adds iTXt chunks."""
    if not 0 <= level <= 9:
        raise ValueError(f"PNG level must be 0-9, not {level}")
    if image.mode != "RGB":
        image = image.convert("RGB")
    pixels = np.asarray(image, dtype=np.uint8)
    height, width = pixels.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    parts = [_SIGNATURE, _chunk(b"IHDR", header)]
    parts += [_text_chunk(key, value) for key, value in (text or {}).items()]
    parts += [_chunk(b"IDAT", _deflate(_filtered_rows(pixels), level)), _chunk(b"IEND", b"")]
    return b"".join(parts)
