"""One worker per model: it owns the engine and runs that model's jobs in order.

The queue is the job store: a worker claims the oldest queued job of its model and holds it on a
lease that a thread renews while the job runs, so workers in several processes share one queue
and a job whose worker died goes back to it. A submit in this process wakes the worker at once;
jobs queued by other processes are found by looking again every ``poll_seconds``.

A local pipeline runs one job at a time on one thread; a hosted engine, whose work happens at the
provider, runs ``engine.concurrency`` jobs at once on that many threads. Encoding and writing the
images happen on a shared thread pool, so a thread starts the next job while the last one is
still being encoded. A database outage (Postgres restarting) pauses a worker's writes, which are
retried until the database answers: the job goes on, and no thread dies of it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import TypeVar

from PIL import Image

from fluxserve.engines.base import (
    Capabilities,
    Engine,
    GenerationRequest,
    GenerationResult,
    Progress,
    ProgressCallback,
    warm_up_request,
)
from fluxserve.engines.outputs import finish_result
from fluxserve.engines.safety import OFF, ContentFilter
from fluxserve.engines.validation import MEGAPIXEL, denoising_steps
from fluxserve.errors import (
    ContentBlocked,
    DatabaseUnavailable,
    ErrorCode,
    FluxserveError,
    GenerationCancelled,
    Moderated,
    StorageUnavailable,
)
from fluxserve.imaging.credentials import ContentCredentials, Sign, reference_ingredients
from fluxserve.imaging.encode import ImageFormat, encode_image
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.models import Job, JobEvent, JobEventType, JobSpec, JobStatus, OutputImage, PartialImage, Usage
from fluxserve.jobs.status import ModelStatus, WorkerState
from fluxserve.jobs.store import JobStore
from fluxserve.storage.files import FileStore
from fluxserve.telemetry import NO_TELEMETRY, Telemetry, context
from fluxserve.telemetry.timeline import JobTimeline

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
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        publish: Callable[[str, Capabilities], None] | None = None,
        content_filter: ContentFilter = OFF,
        credentials: ContentCredentials | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.name = name
        self.engine = engine
        self.state = WorkerState.LOADING
        self.load_error: str | None = None
        """Why the model failed to load, for the operator: it may name local paths, so clients never see it."""
        self._store, self._files, self._bus, self._encoder, self._warmup = store, files, bus, encoder, warmup
        self._preview_every = preview_every
        self._filter = content_filter
        self._credentials = credentials
        self._lease_seconds, self._poll_seconds = lease_seconds, poll_seconds
        self._publish = publish
        """Called with the model's capabilities once it has loaded (for ingress-only processes)."""
        self._metrics, self._tracer = telemetry.metrics, telemetry.tracer
        self.id = f"{socket.gethostname()}/{os.getpid()}/{name}/{secrets.token_hex(4)}"
        """Who holds a claimed job in the store: unique to this worker in this process."""
        self._wakeup = threading.Condition()
        self._nudged = False
        self._running: dict[str, threading.Event] = {}
        """The jobs this worker holds, from claim until their images are written, with their cancel events."""
        self._stopping = False
        self._stopped = threading.Event()
        self._seconds_per_job = 1.0
        self._threads = [
            threading.Thread(target=self._main, name=f"worker-{name}", daemon=True),
            threading.Thread(target=self._keep_leases, name=f"leases-{name}", daemon=True),
        ]
        """The main thread and the lease keeper; a hosted model's main thread adds one per job it runs at once."""

    # -- called from other threads -------------------------------------------------------
    def start(self) -> None:
        main, leases = self._threads[:2]
        leases.start()
        main.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._wakeup:
            self._stopping = True
            for cancel in self._running.values():
                cancel.set()
            self._wakeup.notify_all()
        self._stopped.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            if thread.is_alive() or thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        """A job was queued for this model: look in the store now rather than at the next poll."""
        with self._wakeup:
            self._nudged = True
            self._wakeup.notify_all()

    @property
    def queued(self) -> int:
        """Jobs waiting for this model, queued by any process."""
        return self._store.queued_count(self.name)

    @property
    def holding(self) -> int:
        """Jobs this worker holds now (claimed and not yet finished)."""
        with self._wakeup:
            return len(self._running)

    @property
    def running_job(self) -> str | None:
        """The job running (the oldest, where several run at once), if any."""
        with self._wakeup:
            return next(iter(self._running), None)

    @property
    def running_count(self) -> int:
        """Jobs this worker holds now, from claim until their images are written."""
        with self._wakeup:
            return len(self._running)

    def position(self, job_id: str) -> int | None:
        """1 for the next job to run; None when not waiting."""
        return self._store.position(job_id)

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
        """Stop a job this worker runs at its next step; for a queued job (canceled in the store), tell
        the jobs behind it that they moved up."""
        with self._wakeup:
            cancel = self._running.get(job_id)
        if cancel is not None:
            cancel.set()
        else:
            self._announce_positions()

    # -- the worker thread -----------------------------------------------------------------
    def _main(self) -> None:
        try:
            loading = time.perf_counter()
            self.engine.load()
            if self._warmup:
                self._warm_up()
            self._metrics.model_loaded(self.name, time.perf_counter() - loading)
        except Exception as error:
            self.load_error = str(error)
            self.state = WorkerState.FAILED
            log.error("model %s failed to load: %s", self.name, error)
            self._fail_waiting()
            return
        self.state = WorkerState.READY
        log.info("model %s is ready", self.name)
        self._publish_capabilities()
        for number in range(1, self.engine.concurrency):
            thread = threading.Thread(target=self._run_jobs, name=f"worker-{self.name}-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._run_jobs()

    def _publish_capabilities(self) -> None:
        publish, capabilities = self._publish, self.engine.capabilities
        if publish is None or self.engine.remote:  # a hosted model's capabilities are known everywhere
            return
        try:
            self._durably(lambda: publish(self.name, capabilities))
        except DatabaseUnavailable:  # only while stopping
            log.warning("model %s: could not publish its capabilities (the database is down)", self.name)

    @property
    def alive(self) -> bool:
        """Whether the worker's threads run (a started worker whose model loaded, or is loading)."""
        return all(thread.is_alive() for thread in self._threads[:2]) and not self._stopping

    def _run_jobs(self) -> None:
        while (job := self._next()) is not None:
            self._process(job)

    def _warm_up(self) -> None:
        self.engine.generate(warm_up_request(self.engine.capabilities))

    def _next(self) -> Job | None:
        """Claim the next job, waiting for one; None once the worker stops."""
        while True:
            with self._wakeup:
                if self._stopping:
                    return None
                self._nudged = False
            try:
                job = self._store.claim(self.name, self.id, time.time() + self._lease_seconds)
            except DatabaseUnavailable:  # said once by the API's 503s and the pool's log; look again later
                job = None
            except Exception:
                log.exception("model %s: could not claim a job; trying again", self.name)
                job = None
            with self._wakeup:
                if job is not None:
                    self._running[job.id] = threading.Event()
                    return job
                if not self._nudged and not self._stopping:
                    self._wakeup.wait(self._poll_seconds)

    def _keep_leases(self) -> None:
        """Renew the leases of the jobs this worker holds; stop those canceled elsewhere or lost."""
        while not self._stopped.wait(self._lease_seconds / 3):
            with self._wakeup:
                held = list(self._running)
            try:
                lost = self._store.renew(held, self.id, time.time() + self._lease_seconds)
            except DatabaseUnavailable:
                log.warning(
                    "model %s: could not renew its jobs' leases (the database is down); trying again", self.name
                )
                continue
            except Exception:
                log.exception("model %s: could not renew its jobs' leases; trying again", self.name)
                continue
            with self._wakeup:
                for job_id in lost:
                    if (cancel := self._running.get(job_id)) is not None:
                        cancel.set()

    def _announce_positions(self) -> None:
        announce_positions(self._store, self._bus, self.name)

    def _fail_waiting(self) -> None:
        """Fail the jobs that waited for a model that did not load; why is in the server log only."""
        for job_id in self._store.queued(self.name):
            message = f"model {self.name} could not be loaded; the server's log says why"
            self._fail(job_id, ErrorCode.MODEL_UNAVAILABLE, message, held=False)

    def _process(self, job: Job) -> None:
        handed_over = False
        timeline = JobTimeline.begin(job.id, self.name, job.created_at, job.started_at or time.time())
        self._tracer.job_started(timeline)
        with context.job(job.id, job.owner):
            try:
                handed_over = self._attempt(job, timeline)
            except DatabaseUnavailable:  # only while stopping: the job stays as recorded, and its lease runs out
                log.warning("job %s: the database could not be reached while the server stopped", job.id)
            finally:
                if not handed_over:
                    self._let_go(job.id)
                    self._traced(timeline, "interrupted" if timeline.status == "running" else timeline.status)

    def _attempt(self, job: Job, timeline: JobTimeline) -> bool:
        """Run a claimed job; True when its images went to the encoder, which finishes it."""
        job_id = job.id
        with self._wakeup:
            cancel = self._running[job_id]
        try:
            if self.engine.remote and job.attempts > 1:
                timeline.status = "failed"
                self._fail(
                    job_id,
                    ErrorCode.INTERRUPTED,
                    f"the server stopped while {job.spec.model} was working on this job; it is not sent again, "
                    "since the provider may already have billed it: submit it again if you still want it",
                )
                return False
            self._bus.publish(JobEvent(job_id, JobEventType.STARTED, job=job))
            self._announce_positions()  # everyone behind it moved up
            started = time.perf_counter()
            request = self._request(job)
            timeline.mark("denoise")
            reporter = self._reporter(job.spec, job_id, timeline)
            result = self.engine.generate(request, progress=reporter, cancel=cancel)
            self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.perf_counter() - started)
            self._provider_call("ok", result.cost_usd)
            self._encoder.submit(self._finish, job, result, timeline)
            return True
        except GenerationCancelled as canceled:
            timeline.status = "interrupted" if self._stopping else "canceled"  # on shutdown it goes back to the queue
            self._provider_call("canceled")
            self._canceled(job_id, canceled)
        except FluxserveError as error:
            timeline.status = "failed"
            self._provider_call(error.code.value)
            self._fail(
                job_id,
                error.code,
                str(error),
                retry_after=getattr(error, "retry_after", None),
                moderated=getattr(error, "moderated", None),
            )
        except Exception:
            timeline.status = "failed"
            self._provider_call(ErrorCode.SERVER_ERROR.value)
            log.exception("job %s failed", job_id)
            self._fail(job_id, ErrorCode.SERVER_ERROR, "the generation failed unexpectedly; see the server log")
        return False

    def _provider_call(self, outcome: str, cost_usd: float | None = None) -> None:
        if self.engine.remote:
            self._metrics.provider_call(self.engine.provider, outcome, cost_usd)

    def _traced(self, timeline: JobTimeline, status: str) -> None:
        """The job's spans, from its timeline (nothing unless tracing is on); never fails the job."""
        timeline.end(status)
        log.info("job %s %s after %.2f s", timeline.job_id, status, timeline.seconds_running)
        try:
            self._tracer.job_finished(timeline)
        except Exception:
            log.exception("job %s: its trace could not be recorded", timeline.job_id)

    def _canceled(self, job_id: str, canceled: GenerationCancelled) -> None:
        if self._stopping:  # shutting down: the job goes back to the queue, for this server's next start or another's
            self._durably(lambda: self._store.release(job_id, self.id))
            log.info("job %s interrupted by shutdown; it goes back to the queue", job_id)
            return
        # A hosted engine says what the cancel could not undo (the provider may still bill): keep it.
        note = None if canceled.message == GenerationCancelled().message else canceled.message
        held = self.id
        if self._durably(lambda: self._store.mark_canceled(job_id, only_if=JobStatus.RUNNING, note=note, worker=held)):
            self._bus.publish(
                JobEvent(job_id, JobEventType.CANCELED, job=self._durably(lambda: self._store.get(job_id)))
            )
        else:
            log.warning("job %s: stopped; its lease had run out, so another worker may run it", job_id)

    def _let_go(self, job_id: str) -> None:
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

    def _reporter(self, spec: JobSpec, job_id: str, timeline: JobTimeline) -> ProgressCallback:
        partial_format = ImageFormat(spec.output_format)
        steps = self._step_timer()

        def report(progress: Progress) -> None:
            steps(progress)
            timeline.step()
            preview = partial = None
            if progress.preview is not None:
                # Spread over the steps the engine says it runs: an edit with strength runs fewer than spec.steps.
                partial_at = partial_image_steps(spec.partial_images, progress.total_steps)
                wants_preview = self._preview_every > 0 and progress.step % self._preview_every == 0
                wants_partial = progress.step in partial_at
                image = self._preview(progress) if wants_preview or wants_partial else None
                if image is not None and not self._filter.passes(image):
                    image = None  # the content filter would withhold it: no glimpse of it either
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

    def _step_timer(self) -> ProgressCallback:
        """Times each denoising step from the end of the one before (a local model's steps only)."""
        last: tuple[int, int, float] | None = None

        def timed(progress: Progress) -> None:
            nonlocal last
            if self.engine.remote or progress.stage is not None:
                return
            now = time.perf_counter()
            if last is not None and last[:2] == (progress.image_index, progress.step - 1):
                self._metrics.step(self.name, now - last[2])
            last = (progress.image_index, progress.step, now)

        return timed

    def _preview(self, progress: Progress) -> Image.Image | None:
        """The engine's preview of this step; a preview that fails is skipped, never the job."""
        assert progress.preview is not None
        try:
            return progress.preview()
        except Exception:
            log.exception("model %s: the step preview failed; the job goes on without it", self.name)
            return None

    def _finish(self, job: Job, result: GenerationResult, timeline: JobTimeline) -> None:
        """On the encoder pool: encode, write atomically, then mark the job done."""
        timeline.mark("encode")
        with context.job(job.id, job.owner):
            self._traced(timeline, self._write(job, result))

    def _write(self, job: Job, result: GenerationResult) -> str:
        """Judge (the content filter), encode, sign and write the images, then mark the job done;
        returns how it ended."""
        try:
            fmt = ImageFormat(job.spec.output_format)
            encoded = finish_result(
                result,
                fmt,
                compression=job.spec.output_compression,
                content_filter=self._filter,
                sign=self._signer(job),
            )
            outputs = []
            for index, image in enumerate(encoded):
                self._files.write_output(job.id, index, fmt, image.data)
                outputs.append(OutputImage(index=index, seed=image.seed, bytes=len(image.data)))
            held = self.id
            if self._durably(
                lambda: self._store.mark_succeeded(job.id, outputs, usage_of(job.spec, result), worker=held)
            ):
                self._bus.publish(
                    JobEvent(job.id, JobEventType.COMPLETED, job=self._durably(lambda: self._store.get(job.id)))
                )
            return JobStatus.SUCCEEDED.value
        except ContentBlocked as blocked:  # nothing was written: the job says why, in our words
            log.info("job %s: the content filter withheld its images", job.id)
            self._fail(job.id, blocked.code, str(blocked), moderated=blocked.moderated)
        except StorageUnavailable as error:  # the bucket is down: say so, with its code (503)
            log.warning("job %s: %s", job.id, error)
            self._fail(job.id, error.code, f"the images could not be saved: {error}")
        except Exception:
            log.exception("job %s: encoding or writing failed", job.id)
            self._fail(job.id, ErrorCode.SERVER_ERROR, "the images could not be saved; see the server log")
        finally:
            self._let_go(job.id)
        return JobStatus.FAILED.value

    def _signer(self, job: Job) -> Sign | None:
        """Signs one encoded image of ``job`` (with the provider's file, if any); None when not signing."""
        if self._credentials is None:
            return None
        references = self._files.read_reference_files(job.id, job.spec.references)
        return self._credentials.signer(job.spec.model, reference_ingredients(references))

    def _fail(
        self,
        job_id: str,
        error_type: ErrorCode,
        message: str,
        *,
        retry_after: int | None = None,
        moderated: Moderated | None = None,
        held: bool = True,
    ) -> None:
        """Fail a job this worker holds (``held``), or a queued one."""
        worker = self.id if held else None
        self._durably(
            lambda: self._store.mark_failed(
                job_id, error_type, message, retry_after=retry_after, worker=worker, moderated=moderated
            )
        )
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


def announce_positions(store: JobStore, bus: EventBus, model: str) -> None:
    """Tell this process's watchers of each job waiting for ``model`` where it now stands in the queue
    (a :attr:`~fluxserve.jobs.models.JobEvent.local` event: each process tells its own watchers)."""
    waiting = store.queued(model)
    for position, job_id in enumerate(waiting, start=1):
        if bus.watched(job_id):
            bus.publish(JobEvent(job_id, JobEventType.QUEUED, position=position, local=True))


def partial_image_steps(count: int, total_steps: int) -> list[int]:
    """The steps after which a streamed job sends its ``count`` partial images, evenly spread over the
    ``total_steps`` the engine reports (those that run: fewer than asked for an edit with strength).

    Never the last step (the final image follows it); fewer when the job has too few steps.
    """
    steps = {round(total_steps * i / (count + 1)) for i in range(1, count + 1)}
    return sorted(step for step in steps if 1 <= step < total_steps)


def usage_of(spec: JobSpec, result: GenerationResult) -> Usage:
    """What a finished job used; its steps are those that ran (an edit with ``strength`` runs some of them)."""
    return Usage(
        input_megapixels=spec.input_megapixels,
        output_megapixels=round(len(result.images) * result.width * result.height / MEGAPIXEL, 4),
        steps=denoising_steps(result.steps, result.strength) * len(result.images),
        images=len(result.images),
        cost_usd=result.cost_usd,
    )
