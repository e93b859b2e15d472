"""Numbers that arrive as text: query strings, headers, form fields, cursors, signed URLs, sizes.

Python's ``int()`` and ``float()`` are generous: they take Unicode digits (``"٢٥٦"``), underscores
(``"1_0"``), spaces, ``+``, and for floats ``nan``, ``inf`` and exponents; ``str.isdigit()`` is
more generous still (``"²"``, which ``int()`` then refuses). So every number a client sends as
text goes through here: ASCII digits only, a ``-`` only where the range allows negatives, at
most :data:`MAX_CHARS` characters (checked before any conversion, so a huge string costs
nothing), and the value inside ``low``-``high``. Anything else is an :class:`InvalidRequest`
naming the parameter and saying what to send.
"""

from __future__ import annotations

import math
import re

from fluxserve.errors import InvalidRequest

MAX_CHARS = 32
"""The longest number text looked at; longer text is refused unread."""
MAX_WHOLE = 2**63 - 1
"""The largest whole number a client may send where nothing smaller applies (SQLite's largest integer)."""

_INT = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _shown(text: str) -> str:
    return repr(text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "...")


def ascii_int(text: str, *, signed: bool = False) -> int | None:
    """The value of ``text`` if it is ASCII digits (after a ``-`` when ``signed``), else None."""
    if len(text) > MAX_CHARS or _INT.fullmatch(text) is None:
        return None
    if text.startswith("-") and not signed:
        return None
    return int(text)


def parse_int(text: str, *, param: str, low: int, high: int) -> int:
    """``text`` as a whole number from ``low`` to ``high``; InvalidRequest naming ``param`` otherwise."""
    value = ascii_int(text, signed=low < 0)
    if value is None or not low <= value <= high:
        raise InvalidRequest(
            f"{param} must be a whole number from {low} to {high} in ASCII digits, not {_shown(text)}", param=param
        )
    return value


def parse_float(text: str, *, param: str, low: float, high: float) -> float:
    """``text`` as a decimal number (``4``, ``4.5``, ``-1``) from ``low`` to ``high``; no exponent, nan or inf."""
    value = None
    if len(text) <= MAX_CHARS and _DECIMAL.fullmatch(text) is not None:
        value = float(text)
        if text.startswith("-") and low >= 0:
            value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequest(
            f"{param} must be a decimal number from {low:g} to {high:g} such as 4 or 4.5, not {_shown(text)}",
            param=param,
        )
    return value


def check_limit(value: float | None, *, param: str, high: float) -> None:
    """A limit must be finite and above 0 (None: no limit); InvalidRequest naming ``param`` otherwise."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{param} must be a finite number, not {value!r}; omit it for no limit", param=param)
    if not 0 < value <= high:
        raise InvalidRequest(f"{param} must be more than 0 and at most {high:,.0f}; omit it for no limit", param=param)
