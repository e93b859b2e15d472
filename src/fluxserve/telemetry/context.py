"""The ids a log line carries: the request, the job and the API key (its id, never the key).

Context variables, so that each asyncio task and each thread has its own: the request id is set
by the API's middleware, the key id once the caller is known, the job id by the worker around
the work it does for a job (on its own thread and on the encoder pool's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("fluxserve_request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("fluxserve_job_id", default=None)
key_id: ContextVar[str | None] = ContextVar("fluxserve_key_id", default=None)


@contextlib.contextmanager
def job(job: str, key: str | None = None) -> Iterator[None]:
    """Log lines inside carry ``job`` (and the id of the key that made it)."""
    job_token = job_id.set(job)
    key_token = key_id.set(key)
    try:
        yield
    finally:
        key_id.reset(key_token)
        job_id.reset(job_token)


def current() -> dict[str, str]:
    """The ids set here now, by their JSON log names."""
    found = {"request_id": request_id.get(), "job_id": job_id.get(), "key_id": key_id.get()}
    return {name: value for name, value in found.items() if value is not None}
