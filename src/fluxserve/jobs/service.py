"""The job service: the one place requests become jobs, wait, and are canceled.

HTTP handlers call it; it owns the store, the files, the event bus and one worker per model.
Its blocking methods are quick (a SQLite row, a file write) and are meant for a thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from fluxserve.engines.base import Capabilities, Engine
from fluxserve.errors import EngineNotReady, ModelUnavailable, NotFound, QueueFull, UnknownModel
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.models import Job, JobEvent, JobSpec, JobStatus, new_job_id
from fluxserve.jobs.store import JobStore
from fluxserve.jobs.worker import ModelWorker, WorkerState
from fluxserve.settings import Settings
from fluxserve.storage.files import FileStore

log = logging.getLogger("fluxserve.jobs")


class JobService:
    def __init__(self, settings: Settings, engines: dict[str, Engine]) -> None:
        self.settings = settings
        self.store = JobStore(settings.data_dir / "jobs.sqlite3")
        self.files = FileStore(settings.data_dir)
        self.bus = EventBus()
        self._admission = threading.Lock()
        self._encoder = ThreadPoolExecutor(settings.encode_threads, thread_name_prefix="encode")
        self.workers = {
            name: ModelWorker(
                name,
                engine,
                store=self.store,
                files=self.files,
                bus=self.bus,
                encoder=self._encoder,
                warmup=settings.warmup,
            )
            for name, engine in engines.items()
        }

    @property
    def default_model(self) -> str:
        return next(iter(self.workers))

    def start(self) -> None:
        """Queue again every job a previous process accepted but did not finish, then start."""
        for job in self.store.requeue_unfinished():
            worker = self.workers.get(job.spec.model)
            if worker is None:
                self.store.mark_failed(job.id, "model_not_found", f"model {job.spec.model} is no longer served")
            else:
                worker.enqueue(job.id)
        for worker in self.workers.values():
            worker.start()

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self._encoder.shutdown(wait=True)
        self.store.close()

    def worker(self, model: str) -> ModelWorker:
        worker = self.workers.get(model)
        if worker is None:
            served = ", ".join(self.workers)
            raise UnknownModel(f"model {model!r} is not served here; available: {served}")
        return worker

    def capabilities(self, model: str) -> Capabilities:
        worker = self.worker(model)
        if worker.state is WorkerState.FAILED:
            raise ModelUnavailable(f"model {model} could not be loaded: {worker.load_error}")
        if worker.state is WorkerState.LOADING:
            raise EngineNotReady(f"model {model} is still loading; try again shortly", retry_after=5)
        return worker.engine.capabilities

    def submit(self, spec: JobSpec, references: list[Image.Image]) -> Job:
        worker = self.worker(spec.model)
        job_id = new_job_id()
        self.files.write_references(job_id, references)
        with self._admission:  # check and enqueue as one step, so the bound holds under concurrency
            if worker.queued >= self.settings.max_queue:
                self.files.delete_job(job_id)
                retry = worker.retry_after()
                raise QueueFull(
                    f"{worker.queued} jobs are waiting for {spec.model}; try again in {retry} s", retry_after=retry
                )
            job = self.store.create(job_id, spec)
            worker.enqueue(job_id)
        self.bus.publish(JobEvent(job_id, "queued", job=job))
        return job

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once; ask a running one to stop at its next step."""
        job = self.get(job_id)
        worker = self.workers.get(job.spec.model)
        if not self.cancel_if_queued(job_id) and worker is not None:
            worker.cancel(job_id)
        return self.get(job_id)

    def cancel_if_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; a running or finished job is left to finish."""
        if not self.store.mark_canceled(job_id, only_if=JobStatus.QUEUED):
            return False
        job = self.get(job_id)
        worker = self.workers.get(job.spec.model)
        if worker is not None:
            worker.cancel(job_id)
        self.bus.publish(JobEvent(job_id, "canceled", job=job))
        return True

    async def wait(self, job_id: str) -> Job:
        """Wait until the job has finished, and return it."""
        with self.bus.watch(job_id) as events:
            job = await asyncio.to_thread(self.get, job_id)
            while not job.status.finished:
                event = await events.get()
                if event.terminal:
                    job = await asyncio.to_thread(self.get, job_id)
        return job
