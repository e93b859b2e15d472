"""Every error class has one HTTP status, and a failed job is answered with the status of what failed it."""

from __future__ import annotations

import pytest

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
