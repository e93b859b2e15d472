"""Helpers for the jobs API tests: a real server on loopback and ways to poll it."""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI

from fluxserve.api.deps import Services
from fluxserve.jobs.models import JobSpec
from fluxserve.jobs.service import JobService
from tests.helpers import TEST_TIMEOUT, wait_for

JOBS = "/v1/jobs"
# tiny-random-base at 256x256 runs real classifier-free guidance: about 10 ms a step on a laptop CPU.
SLOW = {"model": "tiny-random-base", "prompt": "slow", "size": "256x256", "steps": 100}
QUICK = {"model": "tiny-random-base", "prompt": "quick", "size": "64x64", "steps": 3}


class LiveServer:
    """A fluxserve app under uvicorn on loopback, with a client and its job service at hand."""

    def __init__(self, app: FastAPI, url: str) -> None:
        self.app, self.url = app, url
        self.http = httpx.Client(base_url=url, timeout=TEST_TIMEOUT)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def service(self) -> JobService:
        return self.services.jobs

    def submit(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        response = self.http.post(JOBS, json=body, **kwargs)
        assert response.status_code in (200, 202), response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"{JOBS}/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait_status(self, job_id: str, *statuses: str, timeout: float | None = None) -> dict[str, Any]:
        """Poll the job until its status is one of ``statuses``; return it (``timeout``: TEST_TIMEOUT)."""
        seen: list[dict[str, Any]] = []

        def reached() -> bool:
            seen.append(self.job(job_id))
            return seen[-1]["status"] in statuses

        wait_for(reached, f"job {job_id} {' or '.join(statuses)}", timeout=timeout)
        return seen[-1]


def sse_lines(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a raw SSE body."""
    pairs = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        pairs.append((fields["event"], json.loads(fields["data"])))
    return pairs


def generation_spec(prompt: str, *, model: str, steps: int, size: int) -> JobSpec:
    """A square text-to-image job as the store keeps it (seed 1, one PNG by URL)."""
    return JobSpec(
        model=model,
        operation="generation",
        prompt=prompt,
        width=size,
        height=size,
        steps=steps,
        guidance=None,
        seed=1,
        n=1,
        output_format="png",
        output_compression=None,
        response_format="url",
    )
