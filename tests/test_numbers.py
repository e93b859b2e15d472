"""The strict parser of numbers sent as text (fluxserve.numbers)."""

from __future__ import annotations

import math

import pytest

from fluxserve.errors import InvalidRequest
from fluxserve.numbers import MAX_CHARS, MAX_WHOLE, ascii_int, check_limit, parse_float, parse_int

# What Python's int(), float() or str.isdigit() let through, and none of it is a plain number.
HOSTILE = [
    "",
    " ",
    "²",  # isdigit() says yes, int() says no
    "٢٥٦",  # Arabic-Indic digits: int() says 256
    "\uff11\uff12",  # fullwidth digits
    "1_0",
    " 5",
    "5 ",
    "5\n",
    "+5",
    "--5",
    "0x10",
    "1e3",
    "5.0",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "one",
    "9" * 5000,  # int() would refuse it too (over 4300 digits), with a ValueError
]


@pytest.mark.parametrize("text", HOSTILE)
def test_only_ascii_digits_are_whole_numbers(text: str) -> None:
    assert ascii_int(text) is None
    assert ascii_int(text, signed=True) is None
    with pytest.raises(InvalidRequest) as refused:
        parse_int(text, param="limit", low=-10, high=10)
    assert refused.value.param == "limit"
    assert "limit must be a whole number from -10 to 10" in refused.value.message
    assert len(refused.value.message) < 200  # a huge input is not echoed back whole


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("7", 7), ("100", 100), ("007", 7)])
def test_plain_digits_parse(text: str, value: int) -> None:
    assert parse_int(text, param="p", low=0, high=100) == value
    assert ascii_int(text) == value


@pytest.mark.parametrize("text", ["-1", "-0", "101", str(10**30)])
def test_out_of_range_or_a_sign_where_none_belongs_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="from 0 to 100"):
        parse_int(text, param="p", low=0, high=100)


def test_a_minus_sign_only_where_the_range_goes_below_zero() -> None:
    assert parse_int("-5", param="p", low=-10, high=10) == -5
    assert parse_int("-0", param="p", low=-10, high=10) == 0
    assert ascii_int("-5") is None
    assert ascii_int("-5", signed=True) == -5


def test_text_longer_than_the_cap_is_refused_unread() -> None:
    assert ascii_int("1" * MAX_CHARS) == int("1" * MAX_CHARS)
    assert ascii_int("1" * (MAX_CHARS + 1)) is None
    assert ascii_int("0" * (MAX_CHARS + 1)) is None
    assert parse_int(str(MAX_WHOLE), param="p", low=0, high=MAX_WHOLE) == MAX_WHOLE


@pytest.mark.parametrize(("text", "value"), [("4", 4.0), ("4.5", 4.5), ("-1", -1.0), ("0.25", 0.25), (".5", 0.5)])
def test_plain_decimals_parse(text: str, value: float) -> None:
    assert parse_float(text, param="guidance", low=-10, high=10) == value


NOT_DECIMALS = [text for text in HOSTILE if text != "5.0"] + ["1e-3", "4,5", "4.5.1", "-", ".", "1" * 40, "20", "-20"]


@pytest.mark.parametrize("text", NOT_DECIMALS)
def test_decimals_are_ascii_finite_and_in_range(text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_float(text, param="guidance", low=-10, high=10)
    assert refused.value.param == "guidance"
    assert "such as 4 or 4.5" in refused.value.message


def test_a_negative_decimal_where_the_range_starts_at_zero() -> None:
    with pytest.raises(InvalidRequest):
        parse_float("-0", param="p", low=0, high=1)
    assert parse_float("0", param="p", low=0, high=1) == 0.0


@pytest.mark.parametrize("value", [0, -1, 0.0, -0.5, math.inf, -math.inf, math.nan, 101, True, "5"])
def test_limits_are_finite_and_above_zero(value: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_limit(value, param="rpm", high=100)  # type: ignore[arg-type]
    assert refused.value.param == "rpm"
    assert "omit it" in refused.value.message


def test_a_missing_limit_means_none_and_a_sane_one_passes() -> None:
    check_limit(None, param="rpm", high=100)
    check_limit(1, param="rpm", high=100)
    check_limit(0.5, param="quota", high=100)
    check_limit(100, param="rpm", high=100)
