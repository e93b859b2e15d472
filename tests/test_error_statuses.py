"""Every error class has one HTTP status, and a failed job is answered with the status of what failed it."""

from __future__ import annotations

import ast
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

import fluxserve
from fluxserve import errors
from fluxserve.api.errors import status_of


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (errors.ContentModerated("no", provider="bfl"), 400, "invalid_request_error"),
        (errors.ProviderAuthFailed("no", provider="bfl"), 502, "server_error"),
        (errors.ProviderOutOfCredit("no", provider="bfl"), 503, "service_unavailable"),
        (errors.ProviderBusy("no", provider="bfl", retry_after=5), 503, "service_unavailable"),
        (errors.ProviderError("no", provider="bfl"), 502, "server_error"),
        (errors.ModelUnavailable("no"), 503, "service_unavailable"),
        (errors.GenerationError("no"), 500, "server_error"),
    ],
)
def test_an_error_and_a_job_failed_by_it_get_the_same_status(
    error: errors.FluxserveError, status: int, kind: str
) -> None:
    assert status_of(error) == (status, kind)
    assert status_of(errors.JobFailed(str(error), code=error.code)) == (status, kind)


def test_a_job_failed_with_an_unknown_code_is_a_server_error() -> None:
    assert status_of(errors.JobFailed("odd", code="server_error")) == (500, "server_error")


def _error_classes(cls: type[errors.FluxserveError] = errors.FluxserveError) -> list[type[errors.FluxserveError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _error_classes(direct))]


def test_every_code_has_a_status_and_type() -> None:
    assert set(errors.ERROR_STATUSES) == set(errors.ErrorCode)
    for code, answered in errors.ERROR_STATUSES.items():
        assert isinstance(answered.type, errors.ErrorType), code
        server_side = answered.type in (errors.ErrorType.SERVER, errors.ErrorType.SERVICE_UNAVAILABLE)
        assert (answered.status >= 500) == server_side, code


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_code_an_error_can_carry_is_an_error_code(cls: type[errors.FluxserveError]) -> None:
    assert isinstance(cls.code, errors.ErrorCode)
    chosen = typing.get_type_hints(cls.__init__, vars(errors)).get("code")  # classes whose code is chosen per error
    assert chosen in (None, errors.ErrorCode)


def test_no_code_is_spelled_as_a_string_in_the_sources() -> None:
    """A code is an ErrorCode member wherever it is given: ``code=``, ``error_type=`` and ``code =``."""
    spelled = [
        f"{path.name}:{value.lineno}"
        for path in Path(fluxserve.__file__).parent.rglob("*.py")
        for value in _given_codes(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(value, ast.Constant) and isinstance(value.value, str)
    ]
    assert spelled == []


def _given_codes(tree: ast.AST) -> Iterator[ast.expr]:
    """What is given as a code: ``code=`` and ``error_type=`` arguments, values assigned to a ``code``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield from (keyword.value for keyword in node.keywords if keyword.arg in ("code", "error_type"))
        targets = [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else getattr(node, "targets", [])
        value = getattr(node, "value", None)
        if isinstance(value, ast.expr) and any(_name(target) == "code" for target in targets):
            yield value


def _name(target: ast.expr) -> str:
    return target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) else ""


def test_a_failed_job_is_answered_by_its_codes_status() -> None:
    for code, answered in errors.ERROR_STATUSES.items():
        assert status_of(errors.JobFailed("failed", code=code)) == answered


def test_one_spelling_of_canceled_reads_both() -> None:
    """The code keeps its old wire spelling; a stored row in either spelling reads as the one member."""
    assert errors.GenerationCancelled().code is errors.ErrorCode.CANCELED
    assert errors.ErrorCode.CANCELED == "cancelled"
    assert errors.ErrorCode.stored("cancelled") is errors.ErrorCode.CANCELED
    assert errors.ErrorCode.stored("canceled") is errors.ErrorCode.CANCELED


def test_a_stored_error_type_this_version_does_not_know_reads_as_a_failed_generation() -> None:
    assert errors.ErrorCode.stored("made_up_by_a_later_version") is errors.ErrorCode.GENERATION_FAILED
    assert errors.ErrorCode.stored(None) is None


def test_canceled_is_spelled_one_way_in_the_sources() -> None:
    """Besides the wire value of ErrorCode.CANCELED (and the class GenerationCancelled, whose name is
    kept for its importers) the sources say canceled."""
    allowed = re.compile(r'GenerationCancelled|CANCELED = "cancelled"|spelled ``cancelled`` on the wire')
    stray = [
        f"{path.name}:{number}"
        for path in Path(fluxserve.__file__).parent.rglob("*")
        if path.suffix in (".py", ".sql")  # the web page may well compare a code with the wire value
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "cancelled" in allowed.sub("", line).lower()
    ]
    assert stray == []
