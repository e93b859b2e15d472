"""The job's vocabularies: statuses, event types and operations are enums whose values are wire format."""

from __future__ import annotations

from fluxserve.jobs.models import (
    LIFECYCLE_EVENTS,
    TERMINAL_EVENTS,
    WEBHOOK_EVENTS,
    JobEvent,
    JobEventType,
    JobSpec,
    JobStatus,
    Operation,
    WebhookTarget,
)

SPEC = JobSpec(
    model="tiny-random-base",
    operation=Operation.EDIT,
    prompt="a lighthouse",
    width=64,
    height=64,
    steps=2,
    guidance=None,
    seed=1,
    n=1,
    output_format="png",
    output_compression=None,
    response_format="b64_json",
)


def test_the_wire_values_are_the_ones_clients_know() -> None:
    assert list(JobStatus) == ["queued", "running", "succeeded", "failed", "canceled"]
    assert list(JobEventType) == ["queued", "started", "progress", "completed", "failed", "canceled"]
    assert LIFECYCLE_EVENTS == ("queued", "started", "completed", "failed", "canceled")
    assert WEBHOOK_EVENTS == ("started", "completed", "failed", "canceled")
    assert list(Operation) == ["generation", "edit"]


def test_each_finished_status_has_its_terminal_event_and_only_those_end_a_stream() -> None:
    ended = {status: status.event for status in JobStatus if status.finished}
    assert ended == {
        JobStatus.SUCCEEDED: JobEventType.COMPLETED,
        JobStatus.FAILED: JobEventType.FAILED,
        JobStatus.CANCELED: JobEventType.CANCELED,
    }
    assert JobStatus.QUEUED.event is None
    assert JobStatus.RUNNING.event is None
    assert set(ended.values()) == TERMINAL_EVENTS
    assert [kind for kind in JobEventType if JobEvent("job_x", kind).terminal] == list(ended.values())


def test_a_stored_spec_and_webhook_read_back_as_enums() -> None:
    spec = JobSpec.from_json(SPEC.to_json())
    assert spec == SPEC
    assert spec.operation is Operation.EDIT
    target = WebhookTarget.from_json({"url": "https://example.com/hook", "events": ["completed", "canceled"]})
    assert target.events == (JobEventType.COMPLETED, JobEventType.CANCELED)
    assert all(isinstance(event, JobEventType) for event in target.events)
