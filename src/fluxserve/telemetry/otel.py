"""The OpenTelemetry tracer (the ``tracing`` extra): imported only when an OTLP endpoint is set."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from fluxserve.telemetry.timeline import JobTimeline
from fluxserve.telemetry.tracing import RequestSpan, Tracer

REMEMBERED = 4096
"""Job ids whose request (or job) span is kept for linking; the oldest are forgotten first."""


class _Remembered:
    """A bounded map of job id -> span context, shared by threads."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, trace.SpanContext] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, job_id: str, span: trace.SpanContext) -> None:
        with self._lock:
            self._items[job_id] = span
            while len(self._items) > REMEMBERED:
                self._items.popitem(last=False)

    def get(self, job_id: str) -> trace.SpanContext | None:
        with self._lock:
            return self._items.get(job_id)


class _OtelRequestSpan(RequestSpan):
    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def finish(self, method: str, route: str, status: int) -> None:
        self.span.update_name(f"{method} {route}")
        self.span.set_attribute("http.route", route)
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(trace.StatusCode.ERROR)


class OtelTracer(Tracer):
    enabled = True

    def __init__(self, processor: SpanProcessor, service_name: str = "fluxserve") -> None:
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("fluxserve")
        self._requests = _Remembered()
        self._jobs = _Remembered()
        self._open: dict[str, trace.Span] = {}
        """The spans of the jobs running now, ended with their timelines."""
        self._lock = threading.Lock()

    @classmethod
    def to_endpoint(cls, endpoint: str, service_name: str = "fluxserve") -> OtelTracer:
        """Batches of spans posted to an OTLP/HTTP collector (``http://collector:4318``)."""
        url = endpoint if urlsplit(endpoint).path not in ("", "/") else endpoint.rstrip("/") + "/v1/traces"
        return cls(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)), service_name)

    @classmethod
    def to_exporter(cls, exporter: SpanExporter, service_name: str = "fluxserve") -> OtelTracer:
        """Each span handed to ``exporter`` as it ends (tests: an in-memory exporter)."""
        return cls(SimpleSpanProcessor(exporter), service_name)

    @contextlib.contextmanager
    def request(self, method: str) -> Iterator[RequestSpan]:
        span = self._tracer.start_span(method, kind=trace.SpanKind.SERVER, attributes={"http.request.method": method})
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield _OtelRequestSpan(span)
        finally:
            otel_context.detach(token)
            span.end()

    def job_submitted(self, job_id: str) -> None:
        span = trace.get_current_span()
        if span.get_span_context().is_valid:
            span.set_attribute("fluxserve.job_id", job_id)
            self._requests.put(job_id, span.get_span_context())

    def job_started(self, timeline: JobTimeline) -> None:
        request = self._requests.get(timeline.job_id)
        job = self._tracer.start_span(
            "job",
            context=otel_context.Context(),  # a trace of its own, linked to the request's
            start_time=timeline.created_ns,
            links=[] if request is None else [trace.Link(request, {"fluxserve.link": "queued by"})],
            attributes={"fluxserve.job_id": timeline.job_id, "fluxserve.model": timeline.model},
        )
        with self._lock:
            self._open[timeline.job_id] = job
        self._jobs.put(timeline.job_id, job.get_span_context())

    def job_finished(self, timeline: JobTimeline) -> None:
        with self._lock:
            job = self._open.pop(timeline.job_id, None)
        if job is None:
            return
        parent = trace.set_span_in_context(job)
        attributes = {"fluxserve.job_id": timeline.job_id, "fluxserve.model": timeline.model}
        phases = timeline.phases()
        for phase in phases:
            self._tracer.start_span(phase.name, context=parent, start_time=phase.start_ns, attributes=attributes).end(
                end_time=phase.end_ns
            )
        job.set_attribute("fluxserve.status", timeline.status)
        if timeline.status == "failed":
            job.set_status(trace.StatusCode.ERROR)
        job.end(end_time=phases[-1].end_ns)

    @contextlib.contextmanager
    def webhook(self, job_id: str, event: str) -> Iterator[None]:
        job = self._jobs.get(job_id)
        parent = otel_context.Context() if job is None else trace.set_span_in_context(trace.NonRecordingSpan(job))
        attributes = {"fluxserve.job_id": job_id, "fluxserve.event": event}
        with self._tracer.start_as_current_span(
            "webhook", context=parent, kind=trace.SpanKind.CLIENT, attributes=attributes
        ):
            yield

    def close(self) -> None:
        self._provider.shutdown()
