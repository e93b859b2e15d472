"""What an operator sees of a running server: Prometheus metrics, log context, OpenTelemetry spans.

A low layer (beside :mod:`fluxserve.imaging`), so that the jobs, the webhook sender and the API
can all record into it; it imports nothing of theirs. :class:`Telemetry` bundles one server's
parts, built once by the composition root:

- :mod:`.metrics`: a Prometheus registry per app and the collectors in it;
- :mod:`.context`: the request, job and key ids that log lines carry (contextvars);
- :mod:`.logs`: the text and JSON log formats;
- :mod:`.timeline`: when each phase of a job began, recorded by the worker;
- :mod:`.tracing`: spans from requests and job timelines, only when an OTLP endpoint is set
  (opentelemetry is imported then, and only then).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fluxserve.telemetry.metrics import Metrics, NoMetrics
from fluxserve.telemetry.tracing import NoTracer, Tracer


@dataclass(frozen=True)
class Telemetry:
    """One server's metrics and tracer; the defaults record nothing."""

    metrics: Metrics = field(default_factory=NoMetrics)
    tracer: Tracer = field(default_factory=NoTracer)


NO_TELEMETRY = Telemetry()
"""What a part records into when it is given nothing: nothing."""

__all__ = ["NO_TELEMETRY", "Metrics", "NoMetrics", "NoTracer", "Telemetry", "Tracer"]
