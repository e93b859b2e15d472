"""When each phase of one job began: recorded by the worker as it goes, turned into spans at the end.

A few clock reads per job, so it costs nothing worth measuring whether or not tracing is on.
The phases, in order: ``queue`` (made to started), ``load`` (reading the job's inputs),
``denoise`` (the engine's generate call up to its last step; all of it for a hosted model),
``decode`` (the last step to the images), ``encode`` (encoding and writing the files).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

PHASES = ("queue", "load", "denoise", "decode", "encode")


@dataclass(frozen=True)
class Phase:
    name: str
    start_ns: int
    end_ns: int


@dataclass
class JobTimeline:
    job_id: str
    model: str
    created_ns: int
    """When the job was made (the store's wall-clock time)."""
    marks: dict[str, int] = field(default_factory=dict)
    """Phase name -> when it began, in ``time.time_ns()``."""
    last_step_ns: int | None = None
    status: str = "running"
    end_ns: int | None = None

    @classmethod
    def begin(cls, job_id: str, model: str, created: float, started: float) -> JobTimeline:
        timeline = cls(job_id, model, int(created * 1e9))
        timeline.marks["load"] = max(int(started * 1e9), timeline.created_ns)
        return timeline

    def mark(self, phase: str) -> None:
        self.marks[phase] = time.time_ns()

    def step(self) -> None:
        """A denoising step ended: the last one ends the denoise phase."""
        self.last_step_ns = time.time_ns()

    def end(self, status: str) -> None:
        self.status = status
        self.end_ns = time.time_ns()
        if self.last_step_ns is not None and "denoise" in self.marks and "encode" in self.marks:
            self.marks["decode"] = self.last_step_ns

    @property
    def seconds_running(self) -> float:
        """From its start to its end (or now)."""
        end = self.end_ns if self.end_ns is not None else time.time_ns()
        return (end - self.marks["load"]) / 1e9

    def phases(self) -> list[Phase]:
        """The phases the job went through, each ending where the next began (the last at its end)."""
        starts = [("queue", self.created_ns), *((name, self.marks[name]) for name in PHASES if name in self.marks)]
        end = self.end_ns if self.end_ns is not None else time.time_ns()
        bounds = [start for _, start in starts[1:]] + [end]
        return [Phase(name, start, max(start, stop)) for (name, start), stop in zip(starts, bounds, strict=True)]
