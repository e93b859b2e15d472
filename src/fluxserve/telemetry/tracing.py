"""OpenTelemetry spans, only when an OTLP endpoint is configured.

:class:`Tracer` itself is the tracer of a server without one: every method does nothing, and
opentelemetry is never imported. :func:`open_tracer` builds the real one
(:class:`fluxserve.telemetry.otel.OtelTracer`, the ``tracing`` extra): a span per HTTP request,
and per job a ``job`` span with one child per phase (:mod:`.timeline`), linked to the span of the
request that queued it, and a ``webhook`` span per delivery attempt under its job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fluxserve.errors import MissingExtra
from fluxserve.telemetry.timeline import JobTimeline


class RequestSpan:
    """What the API tells a request's span once the response is known."""

    def finish(self, method: str, route: str, status: int) -> None:
        pass


class Tracer:
    """Records nothing (no endpoint configured)."""

    enabled = False

    @contextlib.contextmanager
    def request(self, method: str) -> Iterator[RequestSpan]:
        """A span around one HTTP request, current while it is handled."""
        yield RequestSpan()

    def job_submitted(self, job_id: str) -> None:
        """The current request queued ``job_id``: its job span will link back to this request's span."""

    def job_started(self, timeline: JobTimeline) -> None:
        """A worker started the job: its span opens (from when the job was made)."""

    def job_finished(self, timeline: JobTimeline) -> None:
        """Emit a finished job's spans, timed as the worker recorded them."""

    @contextlib.contextmanager
    def webhook(self, job_id: str, event: str) -> Iterator[None]:
        """A span around one webhook delivery attempt of ``job_id``."""
        yield

    def close(self) -> None:
        """Send what is still buffered and stop."""


NoTracer = Tracer


def open_tracer(endpoint: str | None, service_name: str = "fluxserve") -> Tracer:
    """The OTLP tracer for ``endpoint``, or the tracer that records nothing when it is None."""
    if endpoint is None:
        return NoTracer()
    try:
        from fluxserve.telemetry.otel import OtelTracer
    except ImportError as error:
        raise MissingExtra("tracing", "otlp_endpoint", error.name or "opentelemetry") from None
    return OtelTracer.to_endpoint(endpoint, service_name)
