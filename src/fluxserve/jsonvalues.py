"""JSON from clients, read within limits: bounded depth and size, finite numbers, valid Unicode.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e400`` (an infinite float), lone UTF-16
surrogates (``"\\ud800"``, text that cannot be stored or sent back as UTF-8), and nesting deep
enough to exhaust the interpreter's recursion. :func:`load_json` refuses each of these with an
:class:`~fluxserve.errors.InvalidRequest` naming where it is, and :func:`check_value` applies the
same rules to a value that was parsed elsewhere (a structured prompt from the command line).
"""

from __future__ import annotations

import json
import math
from typing import Any

from fluxserve.errors import InvalidRequest

MAX_DEPTH = 32
"""How deeply arrays and objects may nest in a request body."""
MAX_ELEMENTS = 100_000
"""How many values (numbers, strings, arrays, objects) a request body may hold."""


def _path(root: str, parts: tuple[str | int, ...]) -> str:
    """``prompt.subjects[0]``; with an empty ``root`` (a whole body) the first key stands alone."""
    path = root
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "body"


def is_unicode(text: str) -> bool:
    """True when ``text`` is valid Unicode: it has no lone UTF-16 surrogate."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows; send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number; send a finite number")
    return value


MAX_DIGITS = 1000
"""The longest whole number a body may write: far past any field's range (those name the field), and short of
the 4,300 digits Python refuses itself."""


def _whole(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"a number of {len(text)} digits is too long; send at most {MAX_DIGITS}")
    return int(text)


class _Refused(ValueError):
    """Raised from inside the parser's hooks: carries our message out of ``json.loads``."""


def _hook(function: Any) -> Any:
    def hooked(text: str) -> Any:
        try:
            return function(text)
        except ValueError as error:
            raise _Refused(str(error)) from None

    return hooked


def load_json(data: bytes | str, *, what: str = "the body", root: str = "") -> Any:
    """Parse ``data`` as JSON and check it with :func:`check_value`; refuse anything else with a 400.

    The element count is bounded before parsing (from the structural characters), so a small body
    cannot make the server build millions of objects.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    structural = raw.count(b"[") + raw.count(b"{") + raw.count(b",")
    if structural >= MAX_ELEMENTS:
        raise InvalidRequest(f"{what} holds too many JSON values; the limit is {MAX_ELEMENTS:,}")
    try:
        value = json.loads(
            data,
            parse_constant=_hook(_refuse_constant),
            parse_float=_hook(_finite_float),
            parse_int=_hook(_whole),
        )
    except _Refused as error:
        raise InvalidRequest(f"{what} is not acceptable JSON: {error}") from None
    except RecursionError:
        raise InvalidRequest(f"{what} nests arrays or objects too deeply; the limit is {MAX_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"{what} is not valid UTF-8") from None
    except ValueError as error:
        raise InvalidRequest(f"{what} is not valid JSON: {error}") from None
    check_value(value, root=root, max_depth=MAX_DEPTH)
    return value


def check_value(value: Any, *, root: str, max_depth: int, max_elements: int = MAX_ELEMENTS) -> None:
    """Refuse ``value`` if it nests deeper than ``max_depth``, holds more than ``max_elements``
    values, a number that is not finite, or text (a key or a string) that is not valid Unicode.

    The error's ``param`` is the path of the first offending value, for example ``prompt.subjects[0]``.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    seen = 0
    while stack:
        item, parts = stack.pop()
        seen += 1
        if seen > max_elements:
            raise InvalidRequest(
                f"{_path(root, ())} holds too many values; the limit is {max_elements:,}", param=root or None
            )
        if len(parts) > max_depth:
            where = _path(root, parts[:max_depth])
            raise InvalidRequest(f"{where} nests too deeply; the limit is {max_depth} levels", param=where)
        if isinstance(item, str):
            _check_text(item, root, parts)
        elif isinstance(item, float) and not math.isfinite(item):
            where = _path(root, parts)
            raise InvalidRequest(f"{where} is {item}; send a finite number", param=where)
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidRequest(f"{_path(root, parts)} has a key that is not text", param=root or None)
                _check_text(key, root, parts, key=True)
                stack.append((child, (*parts, key)))
        elif isinstance(item, list | tuple):
            stack.extend((child, (*parts, index)) for index, child in enumerate(item))


def _check_text(text: str, root: str, parts: tuple[str | int, ...], *, key: bool = False) -> None:
    if is_unicode(text):
        return
    where = _path(root, parts)
    what = f"a key of {where}" if key else where
    raise InvalidRequest(
        f"{what} is not valid Unicode text (it holds a lone surrogate such as \\ud800); send UTF-8 text",
        param=where,
    )


def mend(value: Any) -> Any:
    """``value`` with each lone surrogate in its text replaced by U+FFFD: for data stored before it
    was refused, so that it can still be shown."""
    if isinstance(value, str):
        return value if is_unicode(value) else value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {mend(key): mend(child) for key, child in value.items()}
    if isinstance(value, list):
        return [mend(child) for child in value]
    return value
