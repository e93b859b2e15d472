"""One worker per model: it owns the engine and runs that model's jobs in order.

A local pipeline runs one job at a time on one thread; a hosted engine, whose work happens at the
provider, runs ``engine.concurrency`` jobs at once on that many threads. Encoding and writing the
images happen on a shared thread pool, so a thread starts the next job while the last one is
still being encoded. A database outage (Postgres restarting) pauses a worker's writes, which are
retried until the database answers: the job goes on, and no thread dies of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import TypeVar

from PIL import Image

from fluxserve.engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    Progress,
    ProgressCallback,
    warm_up_request,
)
from fluxserve.engines.outputs import encode_result
from fluxserve.engines.validation import MEGAPIXEL
from fluxserve.errors import DatabaseUnavailable, ErrorCode, FluxserveError, GenerationCancelled, StorageUnavailable
from fluxserve.imaging.encode import ImageFormat, encode_image
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.models import Job, JobEvent, JobEventType, JobSpec, JobStatus, OutputImage, PartialImage, Usage
from fluxserve.jobs.status import ModelStatus, WorkerState
from fluxserve.jobs.store import JobStore
from fluxserve.storage.files import FileStore

log = logging.getLogger("fluxserve.worker")


PREVIEW_JPEG_LOSS = 30
"""Previews are JPEG at quality 70: small, and only a glimpse."""
RETRY_SECONDS = (0.5, 10.0)
"""A store call the database did not answer is tried again after the first, doubling up to the second."""

T = TypeVar("T")


class ModelWorker:
    def __init__(
        self,
        name: str,
        engine: Engine,
        *,
        store: JobStore,
        files: FileStore,
        bus: EventBus,
        encoder: Executor,
        warmup: bool,
        preview_every: int = 0,
    ) -> None:
        self.name = name
        self.engine = engine
        self.state = WorkerState.LOADING
        self.load_error: str | None = None
        """Why the model failed to load, for the operator: it may name local paths, so clients never see it."""
        self._store, self._files, self._bus, self._encoder, self._warmup = store, files, bus, encoder, warmup
        self._preview_every = preview_every
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._wakeup = threading.Condition()
        self._running: dict[str, threading.Event] = {}
        self._stopping = False
        self._seconds_per_job = 1.0
        self._threads = [threading.Thread(target=self._main, name=f"worker-{name}", daemon=True)]

    # -- called from other threads -------------------------------------------------------
    def start(self) -> None:
        self._threads[0].start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._wakeup:
            self._stopping = True
            for cancel in self._running.values():
                cancel.set()
            self._wakeup.notify_all()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            if thread.is_alive() or thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def enqueue(self, job_id: str) -> None:
        with self._wakeup:
            self._pending[job_id] = None
            self._wakeup.notify()

    @property
    def queued(self) -> int:
        with self._wakeup:
            return len(self._pending)

    @property
    def running_job(self) -> str | None:
        """The job running (the oldest, where several run at once), if any."""
        with self._wakeup:
            return next(iter(self._running), None)

    def position(self, job_id: str) -> int | None:
        """1 for the next job to run; None when not waiting."""
        with self._wakeup:
            for position, pending in enumerate(self._pending, start=1):
                if pending == job_id:
                    return position
        return None

    def status(self) -> ModelStatus:
        """Where this model stands, for the API."""
        engine = self.engine
        known = self.state is WorkerState.READY or engine.remote
        return ModelStatus(
            name=self.name,
            state=self.state,
            provider=engine.provider,
            remote=engine.remote,
            configured=engine.configured(),
            capabilities=engine.capabilities if known else None,
            runtime=engine.runtime if self.state is WorkerState.READY else None,
        )

    def retry_after(self) -> int:
        """Seconds until a new job could be admitted, from the observed job duration."""
        return max(1, round(self._seconds_per_job * (self.queued + 1) / self.engine.concurrency))

    def cancel(self, job_id: str) -> None:
        """Drop a queued job, or stop a running one at its next step."""
        with self._wakeup:
            was_waiting = job_id in self._pending
            self._pending.pop(job_id, None)
            if job_id in self._running:
                self._running[job_id].set()
        if was_waiting:
            self._announce_positions()

    # -- the worker thread -----------------------------------------------------------------
    def _main(self) -> None:
        try:
            self.engine.load()
            if self._warmup:
                self._warm_up()
        except Exception as error:
            self.load_error = str(error)
            self.state = WorkerState.FAILED
            log.error("model %s failed to load: %s", self.name, error)
            self._fail_waiting()
            return
        self.state = WorkerState.READY
        log.info("model %s is ready", self.name)
        for number in range(1, self.engine.concurrency):
            thread = threading.Thread(target=self._run_jobs, name=f"worker-{self.name}-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._run_jobs()

    def _run_jobs(self) -> None:
        while (job_id := self._next()) is not None:
            self._process(job_id)

    def _warm_up(self) -> None:
        self.engine.generate(warm_up_request(self.engine.capabilities))

    def _next(self) -> str | None:
        with self._wakeup:
            while not self._pending and not self._stopping:
                self._wakeup.wait()
            if self._stopping:
                return None
            job_id, _ = self._pending.popitem(last=False)
            self._running[job_id] = threading.Event()
            return job_id

    def _announce_positions(self) -> None:
        """Tell the watchers of each waiting job where it now stands in the queue."""
        with self._wakeup:
            waiting = list(self._pending)
        for position, job_id in enumerate(waiting, start=1):
            if self._bus.watched(job_id):
                self._bus.publish(JobEvent(job_id, JobEventType.QUEUED, position=position))

    def _fail_waiting(self) -> None:
        """Fail the jobs that waited for a model that did not load; why is in the server log only."""
        with self._wakeup:
            waiting, self._pending = list(self._pending), OrderedDict()
        for job_id in waiting:
            self._fail(
                job_id, ErrorCode.MODEL_UNAVAILABLE, f"model {self.name} could not be loaded; the server's log says why"
            )

    def _process(self, job_id: str) -> None:
        with self._wakeup:
            cancel = self._running[job_id]
        try:
            if not self._durably(lambda: self._store.mark_running(job_id)):
                return  # canceled while it waited
            job = self._durably(lambda: self._store.get(job_id))
            assert job is not None
            self._bus.publish(JobEvent(job_id, JobEventType.STARTED, job=job))
            self._announce_positions()  # everyone behind it moved up
            started = time.perf_counter()
            result = self.engine.generate(self._request(job), progress=self._reporter(job.spec, job_id), cancel=cancel)
            self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.perf_counter() - started)
            self._encoder.submit(self._finish, job, result)
        except GenerationCancelled as canceled:
            if self._stopping:  # shutting down: the job stays "running" and resumes at the next start
                log.info("job %s interrupted by shutdown; it will run again at the next start", job_id)
                return
            # A hosted engine says what the cancel could not undo (the provider may still bill): keep it.
            note = None if canceled.message == GenerationCancelled().message else canceled.message
            if self._durably(lambda: self._store.mark_canceled(job_id, only_if=JobStatus.RUNNING, note=note)):
                self._bus.publish(
                    JobEvent(job_id, JobEventType.CANCELED, job=self._durably(lambda: self._store.get(job_id)))
                )
        except DatabaseUnavailable:  # only while stopping: the job stays as recorded, and resumes at the next start
            log.warning("job %s: the database could not be reached while the server stopped", job_id)
        except FluxserveError as error:
            self._fail(job_id, error.code, str(error), retry_after=getattr(error, "retry_after", None))
        except Exception:
            log.exception("job %s failed", job_id)
            self._fail(job_id, ErrorCode.SERVER_ERROR, "the generation failed unexpectedly; see the server log")
        finally:
            with self._wakeup:
                self._running.pop(job_id, None)

    def _request(self, job: Job) -> GenerationRequest:
        spec = job.spec
        return GenerationRequest(
            prompt=spec.prompt,
            references=self._files.read_references(job.id, spec.references),
            width=spec.width,
            height=spec.height,
            steps=spec.steps,
            guidance=spec.guidance,
            seed=spec.seed,
            n=spec.n,
            safety_tolerance=spec.safety_tolerance,
            output_format=spec.output_format,
            mask=self._files.read_mask(job.id) if spec.mask else None,
            strength=spec.strength,
            loras=spec.loras,
        )

    def _reporter(self, spec: JobSpec, job_id: str) -> ProgressCallback:
        partial_format = ImageFormat(spec.output_format)

        def report(progress: Progress) -> None:
            preview = partial = None
            if progress.preview is not None:
                # Spread over the steps the engine says it runs: an edit with strength runs fewer than spec.steps.
                partial_at = partial_image_steps(spec.partial_images, progress.total_steps)
                wants_preview = self._preview_every > 0 and progress.step % self._preview_every == 0
                wants_partial = progress.step in partial_at
                image = self._preview(progress) if wants_preview or wants_partial else None
                if image is not None and wants_preview:
                    preview = encode_image(image, ImageFormat.JPEG, compression=PREVIEW_JPEG_LOSS)
                if image is not None and wants_partial:
                    data = encode_image(image, partial_format, compression=spec.output_compression)
                    partial = PartialImage(partial_at.index(progress.step), data)
            step = replace(progress, preview=None)  # the preview callable is only valid during this call
            self._bus.publish(
                JobEvent(job_id, JobEventType.PROGRESS, progress=step, preview=preview, partial_image=partial)
            )

        return report

    def _preview(self, progress: Progress) -> Image.Image | None:
        """The engine's preview of this step; a preview that fails is skipped, never the job."""
        assert progress.preview is not None
        try:
            return progress.preview()
        except Exception:
            log.exception("model %s: the step preview failed; the job goes on without it", self.name)
            return None

    def _finish(self, job: Job, result: GenerationResult) -> None:
        """On the encoder pool: encode, write atomically, then mark the job done."""
        try:
            fmt = ImageFormat(job.spec.output_format)
            encoded = encode_result(result, fmt, compression=job.spec.output_compression)
            outputs = []
            for index, image in enumerate(encoded):
                self._files.write_output(job.id, index, fmt, image.data)
                outputs.append(OutputImage(index=index, seed=image.seed, bytes=len(image.data)))
            if self._durably(lambda: self._store.mark_succeeded(job.id, outputs, usage_of(job.spec, result))):
                self._bus.publish(
                    JobEvent(job.id, JobEventType.COMPLETED, job=self._durably(lambda: self._store.get(job.id)))
                )
        except StorageUnavailable as error:  # the bucket is down: say so, with its code (503)
            log.warning("job %s: %s", job.id, error)
            self._fail(job.id, error.code, f"the images could not be saved: {error}")
        except Exception:
            log.exception("job %s: encoding or writing failed", job.id)
            self._fail(job.id, ErrorCode.SERVER_ERROR, "the images could not be saved; see the server log")

    def _fail(self, job_id: str, error_type: ErrorCode, message: str, *, retry_after: int | None = None) -> None:
        self._durably(lambda: self._store.mark_failed(job_id, error_type, message, retry_after=retry_after))
        self._bus.publish(JobEvent(job_id, JobEventType.FAILED, job=self._durably(lambda: self._store.get(job_id))))

    def _durably(self, call: Callable[[], T]) -> T:
        """``call`` (a store call), tried again while the database cannot be reached, until the worker stops."""
        delay, longest = RETRY_SECONDS
        while True:
            try:
                return call()
            except DatabaseUnavailable:
                with self._wakeup:
                    if self._wakeup.wait_for(lambda: self._stopping, delay):
                        raise
                delay = min(delay * 2, longest)


def partial_image_steps(count: int, total_steps: int) -> list[int]:
    """The steps after which a streamed job sends its ``count`` partial images, evenly spread over the
    ``total_steps`` the engine reports (those that run: fewer than asked for an edit with strength).

    Never the last step (the final image follows it); fewer when the job has too few steps.
    """
    steps = {round(total_steps * i / (count + 1)) for i in range(1, count + 1)}
    return sorted(step for step in steps if 1 <= step < total_steps)


def usage_of(spec: JobSpec, result: GenerationResult) -> Usage:
    return Usage(
        input_megapixels=spec.input_megapixels,
        output_megapixels=round(len(result.images) * result.width * result.height / MEGAPIXEL, 4),
        steps=result.steps * len(result.images),
        images=len(result.images),
        cost_usd=result.cost_usd,
    )
