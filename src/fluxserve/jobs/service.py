"""The job service: the one place requests become jobs, wait, are canceled, kept and cleaned up.

HTTP handlers call it; it runs one worker per model over the parts the composition root built
and hands it (:class:`JobParts`: the store, the files, the event bus, the keys, the webhook
sender). Its blocking methods are quick (a database row, a file write) and are meant for a
thread pool. The webhook sender (:mod:`fluxserve.webhooks`) reaches the service as a
:class:`Webhooks`: this package never imports that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from PIL import Image

from fluxserve.accounts.admission import Admission
from fluxserve.accounts.keys import ANONYMOUS, Caller
from fluxserve.accounts.keystore import KeyStore
from fluxserve.engines.base import Capabilities, Engine, Progress
from fluxserve.engines.safety import OFF, ContentFilter
from fluxserve.errors import (
    Conflict,
    ContentBlocked,
    DatabaseUnavailable,
    EngineNotReady,
    ErrorCode,
    IdempotencyKeyReused,
    InvalidRequest,
    JobFinished,
    ModelUnavailable,
    NotFound,
    QueueFull,
    UnknownModel,
)
from fluxserve.imaging.credentials import ContentCredentials
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.models import (
    WEBHOOK_EVENTS,
    Job,
    JobEvent,
    JobEventType,
    JobSpec,
    JobStatus,
    WebhookTarget,
    new_job_id,
)
from fluxserve.jobs.observe import count_event
from fluxserve.jobs.published import PublishedModels
from fluxserve.jobs.relay import EventRelay
from fluxserve.jobs.status import ModelStatus, WorkerState
from fluxserve.jobs.store import Idempotency, JobStore, Page
from fluxserve.jobs.views import JobProgress, JobView, WebhookDeliveryView, job_view
from fluxserve.jobs.watchers import FellBehind, terminal_only
from fluxserve.jobs.worker import ModelWorker, announce_positions
from fluxserve.settings import Settings
from fluxserve.storage.files import FileStore
from fluxserve.storage.signing import UrlSigner
from fluxserve.storage.uploads import sweep_expired
from fluxserve.telemetry import NO_TELEMETRY, Telemetry
from fluxserve.telemetry.metrics import ModelLoad

log = logging.getLogger("fluxserve.jobs")

SETTLE_SECONDS = 1.0
PROGRESS_WEBHOOK_SECONDS = 0.5
"""Progress webhooks (Replicate's ``logs`` events) of one job are at least this far apart, as Replicate's."""
"""How long a submit waits for its queued event to come back from the events table (Postgres), at most."""
QUEUE_MOVES = (JobEventType.STARTED, JobEventType.CANCELED, JobEventType.FAILED)
"""Events after which the jobs queued behind may have moved up."""


class Webhooks(Protocol):
    """What the service needs of a webhook sender (:class:`fluxserve.webhooks.sender.WebhookSender`)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def notify(self, job: Job, event: str, progress: JobProgress | None = None) -> None:
        """Hand over a lifecycle event (or, with ``progress``, a progress event); called on the
        publishing thread, so it must not block."""

    def deliveries(self, job_id: str) -> list[WebhookDeliveryView]: ...


@dataclass(frozen=True)
class JobParts:
    """What the service works with, built by the composition root (:func:`fluxserve.api.app.build_services`)."""

    store: JobStore
    files: FileStore
    bus: EventBus
    signer: UrlSigner
    keys: KeyStore
    admission: Admission
    webhooks: Webhooks | None = None
    """Without a sender, a job's webhook is kept but never posted."""
    relay: EventRelay | None = None
    """Where processes share a Postgres database: shares the bus's events with theirs."""
    published: PublishedModels | None = None
    """Where workers publish what their loaded model accepts, and ingress-only processes read it."""
    content_filter: ContentFilter = OFF
    """Judges each job's generated images before they are encoded (where it applies to outputs)."""
    credentials: ContentCredentials | None = None
    """Signs C2PA Content Credentials into each output image, the last step before it is stored."""
    telemetry: Telemetry = NO_TELEMETRY
    """Metrics and tracing; the default records nothing."""


class JobService:
    def __init__(self, settings: Settings, engines: dict[str, Engine], parts: JobParts) -> None:
        """One worker per engine, over ``parts``; nothing runs until :meth:`start`."""
        self.settings = settings
        self.store = parts.store
        self.files = parts.files
        self.keys = parts.keys
        self.admission = parts.admission
        self.signer = parts.signer
        self.bus = parts.bus
        self.webhooks = parts.webhooks
        self.content_filter = parts.content_filter
        self.relay = parts.relay
        self.published = parts.published
        self.run_workers = settings.run_workers
        """False: an ingress-only process, which queues jobs for workers in other processes."""
        if not self.run_workers and (self.store.exclusive or self.published is None):
            raise InvalidRequest(
                "run_workers = false needs a database_url (Postgres) that processes with workers share: "
                "nothing would run the jobs queued in this process's SQLite file",
                param="run_workers",
            )
        self.telemetry = parts.telemetry
        self.bus.listen(self._heard)
        self._progress_hooks: dict[str, tuple[Job, float]] = {}
        """Running jobs whose webhook wants progress events: the job and when progress was last sent."""
        self._progress_lock = threading.Lock()
        self._admission = threading.Lock()
        self._stopping = threading.Event()
        self._janitor = threading.Thread(target=self._clean_up_periodically, name="retention", daemon=True)
        self._lease_watch = threading.Thread(target=self._requeue_periodically, name="leases", daemon=True)
        self._encoder = ThreadPoolExecutor(settings.encode_threads, thread_name_prefix="encode")
        self.workers = {
            name: ModelWorker(
                name,
                engine,
                store=self.store,
                files=self.files,
                bus=self.bus,
                encoder=self._encoder,
                warmup=settings.warmup and not engine.remote,  # a remote warm-up would be billed
                preview_every=settings.preview_every,
                lease_seconds=settings.lease_seconds,
                poll_seconds=settings.queue_poll_seconds,
                publish=None if self.published is None else self.published.publish,
                content_filter=parts.content_filter,
                credentials=parts.credentials,
                telemetry=parts.telemetry,
            )
            for name, engine in engines.items()
        }
        self.telemetry.metrics.watch_models(self.model_loads)

    @property
    def default_model(self) -> str:
        return next(iter(self.workers))

    def start(self) -> None:
        """Start the workers over the store's queue. Where this process owns the store, every job a
        previous process left running goes back to the queue first; elsewhere such a job waits for
        its lease to run out. A hosted job that had started is not sent again: the provider may have
        done (and billed) the work already, so its worker fails it and says so.
        """
        if self.relay is not None:
            self.relay.start()
        if self.store.exclusive and self.run_workers:
            for job in self.store.requeue_unfinished():
                if job.spec.model not in self.workers:
                    self._fail_at_start(job, ErrorCode.MODEL_NOT_FOUND, f"model {job.spec.model} is no longer served")
        if self.run_workers:
            for worker in self.workers.values():
                worker.start()
        if self.webhooks is not None:
            self.webhooks.start()
        self._janitor.start()
        self._lease_watch.start()

    def _fail_at_start(self, job: Job, error_type: ErrorCode, message: str) -> None:
        self.store.mark_failed(job.id, error_type, message)
        self.bus.publish(JobEvent(job.id, JobEventType.FAILED, job=self.get(job.id)))

    def stop(self) -> None:
        self._stopping.set()
        for worker in self.workers.values():
            worker.stop()
        self._encoder.shutdown(wait=True)
        if self.relay is not None:  # after the workers' last events, before the webhooks they send
            self.relay.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        for thread in (self._janitor, self._lease_watch):
            if thread.is_alive():
                thread.join()

    def _heard(self, event: JobEvent) -> None:
        """Every event delivered to the bus: an event of this process goes to the job's webhook; one
        relayed from another process may have moved a queue that watchers here are told about."""
        count_event(self.telemetry.metrics, event)
        if not event.relayed:
            self._notify_webhooks(event)
        elif event.type in QUEUE_MOVES and event.job is not None and self.bus.any_watched():
            try:
                announce_positions(self.store, self.bus, event.job.spec.model)
            except DatabaseUnavailable:
                log.info(
                    "job %s: could not tell the jobs behind it their new places (the database is down)", event.job_id
                )

    def _notify_webhooks(self, event: JobEvent) -> None:
        """Only the process an event happened in sends it: relayed copies never reach here."""
        if self.webhooks is None:
            return
        if event.type is JobEventType.PROGRESS:
            self._notify_progress(event)
        elif event.job is not None and event.type in WEBHOOK_EVENTS:
            webhook = event.job.webhook
            with self._progress_lock:
                if event.type is JobEventType.STARTED and webhook and JobEventType.PROGRESS in webhook.events:
                    self._progress_hooks[event.job_id] = (event.job, 0.0)
                elif event.terminal:
                    self._progress_hooks.pop(event.job_id, None)
            self.webhooks.notify(event.job, event.type)

    def _notify_progress(self, event: JobEvent) -> None:
        """A progress event to a webhook that asked for them, at most one per PROGRESS_WEBHOOK_SECONDS."""
        now = time.monotonic()
        with self._progress_lock:
            hook = self._progress_hooks.get(event.job_id)
            if hook is None or event.progress is None or (hook[1] and now - hook[1] < PROGRESS_WEBHOOK_SECONDS):
                return
            self._progress_hooks[event.job_id] = (hook[0], now)
        step = event.progress
        progress = JobProgress(step=step.step, total=step.total_steps, stage=step.stage)
        assert self.webhooks is not None
        self.webhooks.notify(hook[0], event.type, progress)

    def worker(self, model: str) -> ModelWorker:
        worker = self.workers.get(model)
        if worker is None:
            served = ", ".join(self.workers)
            raise UnknownModel(f"model {model!r} is not served here; available: {served}")
        return worker

    def model_statuses(self) -> list[ModelStatus]:
        """Every served model, in the order it was given."""
        return [self._status(worker) for worker in self.workers.values()]

    def model_status(self, model: str) -> ModelStatus:
        """One served model; UnknownModel for any other name."""
        return self._status(self.worker(model))

    def _status(self, worker: ModelWorker) -> ModelStatus:
        """The worker's own status; in an ingress-only process, what the model's replicas published."""
        if self.run_workers:
            return worker.status()
        if worker.engine.remote:  # a hosted model's capabilities are the provider's documented limits
            return replace(worker.status(), state=WorkerState.READY)
        capabilities = None if self.published is None else self.published.capabilities(worker.name)
        return ModelStatus(
            name=worker.name,
            state=WorkerState.LOADING if capabilities is None else WorkerState.READY,
            provider=worker.engine.provider,
            remote=False,
            configured=worker.engine.configured(),
            capabilities=capabilities,
        )

    def model_loads(self) -> dict[str, ModelLoad]:
        """Jobs queued (by any process) and running (in this process) per model, for the metrics."""
        return {name: ModelLoad(worker.queued, worker.running_count) for name, worker in self.workers.items()}

    def mask_models(self) -> list[str]:
        """The served models known to take a mask (a local model is known once it has loaded)."""
        return [s.name for s in self.model_statuses() if s.capabilities is not None and s.capabilities.masks]

    def capabilities(self, model: str) -> Capabilities:
        worker = self.worker(model)
        if not self.run_workers:
            published = self._status(worker).capabilities
            if published is None:
                raise EngineNotReady(f"no replica of model {model} has loaded it yet; try again shortly", retry_after=5)
            return published
        if worker.state is WorkerState.FAILED:  # the reason, which may name local paths, is in the server log
            raise ModelUnavailable(f"model {model} could not be loaded; the server's log says why")
        if worker.state is WorkerState.LOADING:
            raise EngineNotReady(f"model {model} is still loading; try again shortly", retry_after=5)
        return worker.engine.capabilities

    def precheck(
        self, spec: JobSpec, *, idempotency: Idempotency | None = None, caller: Caller = ANONYMOUS
    ) -> Job | None:
        """Everything :meth:`submit` would refuse, checked before the costly work (decoding the
        references); the request then counts toward the key's rate. Returns the job an earlier
        request with the same Idempotency-Key made, if any: then there is nothing to do.

        Pass ``rate_counted=True`` to :meth:`submit` afterwards; it checks the rest again.
        """
        worker = self.worker(spec.model)
        if idempotency is not None and (earlier := self._replay(idempotency, caller.owner)) is not None:
            return earlier
        with self._admission:  # the rate checked and the request counted as one step
            now = self.admission.now()
            self._admit(worker, spec, caller, now, rate=True)
            if caller.key is not None:
                self.admission.record(caller.key, now)
        return None

    def _admit(self, worker: ModelWorker, spec: JobSpec, caller: Caller, now: float, *, rate: bool) -> None:
        """Raise if ``caller`` may not queue ``spec`` now (its key's limits, the model's queue)."""
        if caller.key is not None:
            self.admission.check(caller.key, spec.megapixels, now, busy_retry_after=worker.retry_after(), rate=rate)
        if worker.queued >= self.settings.max_queue:
            retry = worker.retry_after()
            raise QueueFull(
                f"{worker.queued} jobs are waiting for {spec.model}; try again in {retry} s",
                retry_after=retry,
            )

    def submit(
        self,
        spec: JobSpec,
        references: list[Image.Image],
        *,
        mask: Image.Image | None = None,
        webhook: WebhookTarget | None = None,
        idempotency: Idempotency | None = None,
        caller: Caller = ANONYMOUS,
        rate_counted: bool = False,
        refusal_as_job: bool = False,
    ) -> Submitted:
        """Queue a job for ``caller`` if its key's limits allow and the content filter (where it judges
        references) passes its images; with an idempotency key the caller
        already used for the same request, return that job instead. ``rate_counted``: :meth:`precheck`
        counted the request toward the key's rate already. ``refusal_as_job``: references the filter
        refuses make a job that has failed already (``moderation_blocked``, the input), for a surface that
        reports refusals when polled (BFL's), instead of raising :class:`ContentBlocked`."""
        worker = self.worker(spec.model)
        if idempotency is not None and (earlier := self._replay(idempotency, caller.owner)) is not None:
            return Submitted(earlier, replayed=True)
        try:
            self.content_filter.check_references(references)  # a refused image is never stored
        except ContentBlocked as refused:
            if not refusal_as_job:
                raise
            return self._refused(spec, refused, webhook=webhook, idempotency=idempotency, caller=caller)
        job_id = new_job_id()
        try:
            self.files.write_references(job_id, references)  # outside the lock: a bucket may take a while
            if mask is not None:
                self.files.write_mask(job_id, mask)
            with self._admission:  # check and enqueue as one step, so the bounds hold under concurrency
                if idempotency is not None and (earlier := self._replay(idempotency, caller.owner)) is not None:
                    self.files.delete_job(job_id)
                    return Submitted(earlier, replayed=True)
                now = self.admission.now()
                self._admit(worker, spec, caller, now, rate=not rate_counted)
                job = self.store.create(
                    job_id, spec, webhook=webhook, idempotency=idempotency, owner=caller.owner, charged_at=now
                )
                worker.wake()
                self.telemetry.tracer.job_submitted(job_id)
                if caller.key is not None:
                    if not rate_counted:
                        self.admission.record(caller.key, now)
                    self.keys.touch(caller.key.id)
        except BaseException:
            self.files.delete_job(job_id)
            raise
        log.info("job %s queued for %s", job_id, spec.model)
        queued = JobEvent(job_id, JobEventType.QUEUED, job=job, position=worker.position(job_id))
        self.bus.publish(queued, settle=SETTLE_SECONDS)  # a watcher that connects once this returns finds it
        return Submitted(job, replayed=False)

    def _refused(
        self,
        spec: JobSpec,
        refused: ContentBlocked,
        *,
        webhook: WebhookTarget | None,
        idempotency: Idempotency | None,
        caller: Caller,
    ) -> Submitted:
        """A job for a request the content filter refused: failed from the start, nothing stored or
        reserved; its webhook hears of it as of any failed job."""
        with self._admission:  # the idempotency key checked and used as one step, as for a queued job
            if idempotency is not None and (earlier := self._replay(idempotency, caller.owner)) is not None:
                return Submitted(earlier, replayed=True)
            job = self.store.create_refused(
                new_job_id(),
                spec,
                str(refused),
                moderated=refused.moderated,
                webhook=webhook,
                idempotency=idempotency,
                owner=caller.owner,
            )
        log.info("job %s for %s: the content filter refused its references", job.id, spec.model)
        self.bus.publish(JobEvent(job.id, JobEventType.FAILED, job=job))
        return Submitted(job, replayed=False)

    def _replay(self, idempotency: Idempotency, owner: str | None) -> Job | None:
        """The job an earlier request of ``owner`` with this key made; 409 when that request was different."""
        found = self.store.by_idempotency_key(idempotency.key, owner)
        if found is None:
            return None
        job, request_hash = found
        if request_hash != idempotency.request_hash:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {idempotency.key!r} was used for a different request (job {job.id}); "
                "use a new key for a new request"
            )
        return job

    def position(self, job: Job) -> int | None:
        return self.store.position(job.id)

    def progress(self, job_id: str) -> Progress | None:
        event = self.bus.latest(job_id, JobEventType.PROGRESS)
        return None if event is None else event.progress

    def view(self, job: Job, base_url: str) -> JobView:
        """The client's view of a job, with its live queue position or progress."""
        progress = self.progress(job.id) if job.status is JobStatus.RUNNING else None
        return job_view(
            job,
            base_url,
            self.signer,
            position=self.position(job) if job.status is JobStatus.QUEUED else None,
            progress=None
            if progress is None
            else JobProgress(step=progress.step, total=progress.total_steps, stage=progress.stage),
            deliveries=self._deliveries(job),
        )

    def _deliveries(self, job: Job) -> list[WebhookDeliveryView] | None:
        if self.webhooks is None or job.webhook is None:
            return None
        return self.webhooks.deliveries(job.id)

    def history(
        self,
        owner: str | None,
        *,
        limit: int,
        cursor: str | None = None,
        status: JobStatus | None = None,
        model: str | None = None,
    ) -> Page:
        """``owner``'s jobs, newest first, a page at a time (InvalidRequest for a bad cursor)."""
        return self.store.page(limit=limit, cursor=cursor, status=status, model=model, owner=owner)

    def get(self, job_id: str) -> Job:
        """Any job, whoever made it: for the server's own use. Requests go through :meth:`owned`."""
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def owned(self, job_id: str, owner: str | None) -> Job:
        """``owner``'s job: someone else's is NotFound, exactly like one that does not exist."""
        job = self.store.get(job_id)
        if job is None or job.owner != owner:
            raise NotFound(f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str, owner: str | None) -> Job:
        """Cancel ``owner``'s queued job at once; ask a running one to stop at its next step.

        A job that has already finished cannot be canceled: :class:`JobFinished`.
        """
        job = self.owned(job_id, owner)
        if job.status.finished:
            raise JobFinished(f"job {job_id} has already {job.status.value}; there is nothing to cancel")
        if not self.cancel_if_queued(job_id) and self.store.request_cancel(job_id):
            worker = self.workers.get(job.spec.model)
            if worker is not None:  # this process may hold it: stop it now, not at the next lease renewal
                worker.cancel(job_id)
        return self.get(job_id)

    def delete(self, job_id: str, owner: str | None) -> None:
        """Remove ``owner``'s finished job and its files."""
        self.owned(job_id, owner)  # NotFound for an unknown job, or someone else's
        if not self._remove(job_id):
            raise Conflict(f"job {job_id} has not finished; cancel it first, then delete it")

    def clean_up(self, now: float | None = None) -> int:
        """Delete the jobs that finished longer ago than the retention period, and the uploads
        (Replicate's ``POST /v1/files``) that have expired; return how many jobs."""
        now = time.time() if now is None else now
        cutoff = now - self.settings.job_retention_hours * 3600
        removed = 0
        while ids := self.store.finished_before(cutoff):
            removed += sum(self._remove(job_id) for job_id in ids)
        if removed:
            log.info("retention: removed %d finished jobs and their files", removed)
        if swept := sweep_expired(self.files.blobs, now):
            log.info("retention: removed %d expired uploads", swept)
        return removed

    def _remove(self, job_id: str) -> bool:
        """Remove a finished job's files, record and kept events; False if it has not finished.

        Files first: when their store is down (StorageUnavailable, a 503), the record stays and the
        delete can be tried again, rather than leaving images no record leads to."""
        job = self.store.get(job_id)
        if job is None or not job.status.finished:  # a finished job never changes again
            return False
        self.files.delete_job(job_id)
        if not self.store.delete(job_id):
            return False
        self.bus.forget(job_id)
        return True

    def _clean_up_periodically(self) -> None:
        while not self._stopping.wait(self.settings.cleanup_interval_seconds):
            try:
                self.clean_up()
            except Exception:
                log.exception("retention clean-up failed; it will run again")

    def requeue_expired(self, now: float | None = None) -> int:
        """Put the jobs whose worker stopped renewing their lease (it died) back in the queue."""
        jobs = self.store.requeue_expired(time.time() if now is None else now)
        for job in jobs:
            log.warning("job %s: its worker stopped renewing its lease; it goes back to the queue", job.id)
            if (worker := self.workers.get(job.spec.model)) is not None:
                worker.wake()
            self.bus.publish(JobEvent(job.id, JobEventType.QUEUED, job=job, position=self.position(job)))
        return len(jobs)

    def _requeue_periodically(self) -> None:
        while not self._stopping.wait(self.settings.lease_seconds / 2):
            try:
                self.requeue_expired()
            except Exception:
                log.exception("could not look for jobs with expired leases; will look again")

    def cancel_if_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; a running or finished job is left to finish."""
        if not self.store.mark_canceled(job_id, only_if=JobStatus.QUEUED):
            return False
        job = self.get(job_id)
        worker = self.workers.get(job.spec.model)
        if worker is not None:
            worker.cancel(job_id)
        self.bus.publish(JobEvent(job_id, JobEventType.CANCELED, job=job))
        return True

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job has finished, or ``timeout`` seconds have passed; return it as it is then.

        Its terminal event ends the wait at once; the job is also read again from the store every
        ``queue_poll_seconds``, so a job that a worker in another process runs is seen to finish
        whether or not its events reach this process."""
        with self.bus.watch(job_id, terminal_only) as events:  # progress events would only pile up here
            job = await asyncio.to_thread(self.get, job_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while not job.status.finished:
                        with contextlib.suppress(FellBehind):  # only after a terminal event: the job has ended
                            await events.next(self.settings.queue_poll_seconds)
                        job = await self._read_again(job)
        return job

    async def _read_again(self, job: Job) -> Job:
        """``job`` as the store has it now; as it was while the database cannot be reached (it is read
        again at the next look, and the caller's wait ends at its timeout)."""
        try:
            return await asyncio.to_thread(self.get, job.id)
        except DatabaseUnavailable:
            return job


@dataclass(frozen=True)
class Submitted:
    job: Job
    replayed: bool
    """True when an earlier request with the same Idempotency-Key made this job."""
