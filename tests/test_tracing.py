"""OpenTelemetry spans of a real job, collected in memory: the request's span, the job's span with
its phases, linked to the request across the queue, and its webhook's span under it."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fluxserve.api.app import create_app
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.settings import Settings
from fluxserve.telemetry.otel import OtelTracer
from fluxserve.telemetry.timeline import PHASES, JobTimeline
from fluxserve.webhooks.secret import new_secret
from tests.helpers import PREFER_WAIT, wait_for
from tests.jobs_support import JOBS
from tests.webhook_receiver import Answer, Receiver

MODEL = "tiny-random"


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def test_a_job_is_traced_phase_by_phase_and_linked_to_its_request(
    make_settings: Callable[..., Settings], engines: dict[str, DiffusersEngine]
) -> None:
    exporter = InMemorySpanExporter()
    settings = make_settings(models=[MODEL], webhook_secret=new_secret())
    app = create_app(settings, {MODEL: engines[MODEL]}, tracer=OtelTracer.to_exporter(exporter))
    receiver = Receiver([Answer(204)])
    try:
        with TestClient(app) as client:
            body = {"model": MODEL, "prompt": "a lighthouse", "size": "64x64", "webhook_url": receiver.url}
            response = client.post(JOBS, json=body, headers=PREFER_WAIT)
            assert response.json()["status"] == "succeeded", response.text
            job_id = response.json()["id"]
            wait_for(lambda: len(named(exporter.get_finished_spans(), "webhook")) == 2, "two webhook spans")
    finally:
        receiver.close()
    spans = list(exporter.get_finished_spans())

    [request] = named(spans, f"POST {JOBS}")
    assert request.attributes is not None
    assert request.attributes["fluxserve.job_id"] == job_id
    assert request.attributes["http.response.status_code"] == 200
    [job] = named(spans, "job")
    assert job.attributes is not None
    assert (job.attributes["fluxserve.job_id"], job.attributes["fluxserve.status"]) == (job_id, "succeeded")
    assert job.context is not None
    assert request.context is not None
    assert job.context.trace_id != request.context.trace_id  # a trace of its own...
    assert [link.context.span_id for link in job.links] == [request.context.span_id]  # ...linked to the request

    phases = sorted((span for span in spans if span.name in PHASES), key=lambda span: span.start_time or 0)
    assert [span.name for span in phases] == list(PHASES)
    assert all(span.parent is not None and span.parent.span_id == job.context.span_id for span in phases)
    assert phases[0].start_time == job.start_time
    for before, after in itertools.pairwise(phases):
        assert before.end_time == after.start_time  # one phase ends where the next begins
    assert phases[-1].end_time == job.end_time

    webhooks = named(spans, "webhook")
    assert {span.attributes["fluxserve.event"] for span in webhooks if span.attributes} == {"started", "completed"}
    assert all(span.parent is not None and span.parent.span_id == job.context.span_id for span in webhooks)


def test_timeline_phases_follow_the_marks() -> None:
    timeline = JobTimeline.begin("job_x", MODEL, created=100.0, started=101.0)
    timeline.marks.update(denoise=102 * 10**9, encode=104 * 10**9)
    timeline.last_step_ns = 103 * 10**9
    timeline.end("succeeded")
    timeline.end_ns = 105 * 10**9
    got = [(phase.name, phase.start_ns // 10**9, phase.end_ns // 10**9) for phase in timeline.phases()]
    assert got == [
        ("queue", 100, 101),
        ("load", 101, 102),
        ("denoise", 102, 103),
        ("decode", 103, 104),
        ("encode", 104, 105),
    ]


def test_without_an_endpoint_the_sdk_is_never_imported(tmp_path: Path, cache_dir: Path) -> None:
    program = f"""
import sys
from fastapi.testclient import TestClient
from fluxserve.api.app import create_app
from fluxserve.settings import Settings
settings = Settings(data_dir={str(tmp_path)!r}, cache_dir={str(cache_dir)!r}, models=["tiny-random"], warmup=False,
                    allow_download=False)
with TestClient(create_app(settings)) as client:
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200
# FastAPI imports the OpenTelemetry API itself; the SDK, the exporter and fluxserve's tracer stay out.
found = sorted(name for name in sys.modules if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter",
                                                                  "fluxserve.telemetry.otel")))
assert not found, found
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
