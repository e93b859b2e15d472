"""Query parameters read strictly: the text as :mod:`fluxserve.numbers` reads it, not pydantic's lax int."""

from __future__ import annotations

from pydantic import BeforeValidator

from fluxserve.numbers import parse_int


def whole_number_query(param: str, low: int, high: int) -> BeforeValidator:
    """For ``Annotated[int, ...]`` query parameters: the text strictly (:func:`parse_int`), not pydantic's lax int."""
    return BeforeValidator(
        lambda value: parse_int(value, param=param, low=low, high=high) if isinstance(value, str) else value
    )
