"""The webhook sender: a scheduler thread and a few sender threads that post jobs' events.

Worker threads call :meth:`WebhookSender.notify` and move on: it only hands the event over in memory.
The sender's scheduler thread turns each event into a row of ``webhook_deliveries`` (status
``pending``) before the first attempt, so a delivery survives a crash. A few sender threads make
the attempts, so one slow or dead receiver holds up one thread, not every delivery. Each delivery
keeps its id and body across retries; the timestamp header and the signature are made afresh for
each attempt.

Several processes may share the database (Postgres), so a sender holds its pending deliveries on a
lease (``lease_seconds``, as workers hold jobs) that its lease thread renews, and attempts only the
ones it holds (see :mod:`fluxserve.webhooks.deliveries`). At start it takes the deliveries nobody
holds (every pending one where it owns the database, SQLite); while it runs its lease thread takes
those whose sender died, once their lease has run out, keeping their attempt count and due time;
at stop it lets go of its own, for another process or the next start.

Delivery is at least once: a crash between a receiver's 2xx and the row's update sends it again,
and receivers deduplicate by ``webhook-id``. Events of one job may arrive out of order (a retried
``started`` after ``completed``): the body's ``timestamp`` and ``data.status`` say which is newer.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from fluxserve.db import Database
from fluxserve.errors import DatabaseUnavailable
from fluxserve.jobs.models import DeliveryStatus, Job
from fluxserve.jobs.views import JobProgress, WebhookDeliveryView
from fluxserve.settings import Settings
from fluxserve.storage.signing import UrlSigner
from fluxserve.telemetry import NO_TELEMETRY, Telemetry, context
from fluxserve.webhooks.addresses import Resolver, resolve
from fluxserve.webhooks.attempts import post
from fluxserve.webhooks.client import webhook_client
from fluxserve.webhooks.deliveries import Deliveries, Delivery, Due, Hold
from fluxserve.webhooks.logs import SEND_THREAD_PREFIX, hide_urls_in_httpx_logs, origin
from fluxserve.webhooks.payload import BodyMaker, event_body
from fluxserve.webhooks.retries import next_step
from fluxserve.webhooks.secret import secret_key
from fluxserve.webhooks.signing import bfl_signature, signed_headers

log = logging.getLogger("fluxserve.webhooks")

SENDER_THREADS = 4


@dataclass(frozen=True)
class _Notice:
    job: Job
    event: str
    at: float
    progress: JobProgress | None = None


@dataclass(frozen=True)
class _Retry:
    delivery_id: str
    due: float


@dataclass(frozen=True)
class _Stop:
    pass


class WebhookSender:
    """Posts jobs' lifecycle events to their webhooks, retrying with backoff, recording every attempt.

    One scheduler thread owns the due-time heap; ``threads`` sender threads make the HTTP attempts;
    a lease thread renews the hold on this sender's deliveries and takes those of dead senders.
    """

    def __init__(
        self,
        store: Database,
        settings: Settings,
        secret: str,
        signer: UrlSigner,
        *,
        threads: int = SENDER_THREADS,
        resolver: Resolver = resolve,
        bodies: Mapping[str, BodyMaker] | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        """``bodies``: the body makers of other webhook shapes (a target's ``shape``) than fluxserve's own."""
        self._deliveries = Deliveries(store)
        self._exclusive = store.dialect.exclusive
        self.id = f"{socket.gethostname()}/{os.getpid()}/webhooks/{secrets.token_hex(4)}"
        """Who holds a delivery in the store: unique to this sender in this process."""
        self._bodies = dict(bodies or {})
        self._metrics, self._tracer = telemetry.metrics, telemetry.tracer
        self._settings, self._signer, self._resolver = settings, signer, resolver
        self._key = secret_key(secret)
        self._thread_count = threads
        self._inbox: queue.SimpleQueue[_Notice | _Retry | _Stop] = queue.SimpleQueue()
        self._work: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._leases: threading.Thread | None = None
        self._idle = threading.Condition()
        self._unsettled = 0
        """Events handed over and deliveries pending that this sender has not finished with."""

    # -- called from other threads -------------------------------------------------------
    def notify(self, job: Job, event: str, progress: JobProgress | None = None) -> None:
        """Hand over a lifecycle event of ``job`` (as it is now; a progress event with its ``progress``);
        never waits on the network or the database."""
        if job.webhook is None or event not in job.webhook.events:
            return
        with self._idle:
            self._unsettled += 1
            self._inbox.put(_Notice(job, event, time.time(), progress))

    def start(self) -> None:
        """Start the threads and resume the deliveries left pending by a stop, or by a crash: all of
        them where this process owns the database; on a shared one, those nobody holds now (the rest
        once their lease runs out)."""
        if self._threads:
            raise RuntimeError("the webhook sender is already running")
        hide_urls_in_httpx_logs()
        self._stopping.clear()
        self._work = queue.SimpleQueue()
        now = time.time()
        pending = [(due.at, due.id) for due in self._deliveries.claim(self._hold(now), now, every=self._exclusive)]
        with self._idle:
            self._keep_only_notices()
            self._unsettled = len(pending) + self._inbox.qsize()
        self._threads = [threading.Thread(target=self._schedule, args=(pending,), name="webhooks", daemon=True)]
        self._threads += [
            threading.Thread(target=self._send_loop, name=f"{SEND_THREAD_PREFIX}{n}", daemon=True)
            for n in range(self._thread_count)
        ]
        self._leases = threading.Thread(target=self._keep_leases, name="webhook-leases", daemon=True)
        for thread in [*self._threads, self._leases]:
            thread.start()

    def stop(self) -> None:
        """Stop soon: no new attempt starts, one under way finishes (at most the timeout); pending rows stay
        pending, and this sender lets go of them, for another process or the next start.

        Events handed over but not yet recorded are written as pending rows first, so none is lost.
        """
        if not self._threads:  # never started: still keep what was handed over
            self._record_remaining()
            return
        self._stopping.set()
        if self._leases is not None:  # first: it takes over no delivery from now on
            self._leases.join()
            self._leases = None
        scheduler, senders = self._threads[0], self._threads[1:]
        for _ in senders:
            self._work.put(None)
        for thread in senders:  # connect, send and read may each take up to the timeout
            thread.join(self._settings.webhook_timeout_seconds * 3 + 5)
        self._inbox.put(_Stop())
        scheduler.join()
        self._threads = []
        try:
            self._deliveries.release(self.id)
        except DatabaseUnavailable:
            log.warning(
                "could not let go of this process's webhook deliveries; others take them when their lease runs out"
            )
        with self._idle:
            self._unsettled = self._inbox.qsize()  # events handed over after the scheduler ended
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every event handed over is delivered or failed; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unsettled == 0, timeout)

    def deliveries(self, job_id: str) -> list[WebhookDeliveryView]:
        """The deliveries of a job, oldest first, as recorded."""
        return self._deliveries.of_job(job_id)

    def _hold(self, now: float) -> Hold:
        """This sender's hold on a delivery, from ``now`` for one lease."""
        return Hold(self.id, now + self._settings.lease_seconds)

    # -- the lease thread ----------------------------------------------------------------------
    def _keep_leases(self) -> None:
        """Renew the hold on this sender's deliveries; take those whose sender died (its lease ran out)."""
        while not self._stopping.wait(self._settings.lease_seconds / 3):
            try:
                now = time.time()
                self._deliveries.renew(self._hold(now))
                self._adopt(self._deliveries.claim(self._hold(now), now))
            except DatabaseUnavailable:
                log.warning("could not renew the leases of webhook deliveries (the database is down); trying again")
            except Exception:
                log.exception("could not renew the leases of webhook deliveries; trying again")

    def _adopt(self, taken: list[Due]) -> None:
        """Schedule deliveries taken over from a sender that died (or stopped), when each is due."""
        for due in taken:
            log.warning("webhook %s: taken over from a sender that stopped or died; this process sends it", due.id)
            with self._idle:
                self._unsettled += 1
                self._inbox.put(_Retry(due.id, due.at))

    # -- the scheduler thread ----------------------------------------------------------------
    def _schedule(self, due: list[tuple[float, str]]) -> None:
        """Own the heap of (due time, delivery id): record new events, release deliveries when due."""
        heapq.heapify(due)
        while True:
            wait = None if not due else max(0.0, due[0][0] - time.time())
            try:
                message: _Notice | _Retry | _Stop | None = self._inbox.get(timeout=wait)
            except queue.Empty:
                message = None  # a delivery fell due
            if isinstance(message, _Stop):
                self._record_remaining()
                return
            if isinstance(message, _Notice):
                delivery_id = self._record(message)
                if delivery_id is not None:
                    heapq.heappush(due, (message.at, delivery_id))
            elif isinstance(message, _Retry):
                heapq.heappush(due, (message.due, message.delivery_id))
            while due and due[0][0] <= time.time():
                self._work.put(heapq.heappop(due)[1])

    def _record(self, notice: _Notice) -> str | None:
        """Write the delivery row before any attempt, so a crash cannot lose it; None if that failed."""
        job = notice.job
        assert job.webhook is not None  # notify() let only jobs with a webhook through
        try:
            body = self._bodies.get(job.webhook.shape, event_body)(
                job, notice.event, notice.at, self._signer, notice.progress
            )
            running = bool(self._threads) and not self._stopping.is_set()
            held = self._hold(time.time()) if running else None  # at a stop: for whoever comes next
            return self._deliveries.add(job.id, notice.event, job.webhook.url, body, notice.at, held=held)
        except Exception:
            log.exception("could not record the %s webhook of job %s", notice.event, job.id)
            self._settle()
            return None

    def _keep_only_notices(self) -> None:
        """Drop retries a previous run left behind: their rows are pending and resumed from the table."""
        messages: list[_Notice | _Retry | _Stop] = []
        with contextlib.suppress(queue.Empty):
            while True:
                messages.append(self._inbox.get_nowait())
        for message in messages:
            if isinstance(message, _Notice):
                self._inbox.put(message)

    def _record_remaining(self) -> None:
        """At stop: events still in the inbox become pending rows that nobody holds, for the next sender."""
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(message, _Notice):
                self._record(message)

    # -- the sender threads --------------------------------------------------------------
    def _send_loop(self) -> None:
        with webhook_client(self._settings.webhook_timeout_seconds, self._resolver) as client:
            while not self._stopping.is_set():
                delivery_id = self._work.get()
                if delivery_id is None or self._stopping.is_set():
                    return
                try:
                    self._attempt(client, delivery_id)
                except Exception:
                    log.exception("webhook delivery %s: attempt failed unexpectedly; it stays pending", delivery_id)

    def _attempt(self, client: httpx.Client, delivery_id: str) -> None:
        """One attempt at one delivery, recorded; a retry goes back to the scheduler with its due time."""
        delivery = self._deliveries.hold(delivery_id, self._hold(time.time()))
        if delivery is None:  # the job was deleted meanwhile, or another sender took it over
            self._settle()
            return
        with context.job(delivery.job_id):  # on the log lines of this attempt
            self._post(client, delivery)

    def _post(self, client: httpx.Client, delivery: Delivery) -> None:
        number = delivery.attempts + 1
        headers = signed_headers(self._key, delivery.id, delivery.payload, time.time())
        if delivery.bfl_secret is not None:
            headers["x-bfl-signature"] = bfl_signature(delivery.bfl_secret, delivery.payload)
        with self._tracer.webhook(delivery.job_id, delivery.event):
            outcome = post(client, delivery.url, headers, delivery.payload, self._settings.webhook_timeout_seconds)
        now = time.time()
        step = next_step(outcome, number, self._settings, now)
        self._metrics.webhook_attempt("retry" if step.next_attempt_at is not None else step.status.value)
        if not self._deliveries.record(delivery.id, self.id, number, outcome.status_code, step, now):
            log.warning("webhook %s: another process took it over during the attempt; it goes on there", delivery.id)
            self._settle()
            return
        if step.next_attempt_at is not None:
            log.info("webhook %s to %s: %s; retrying", delivery.id, origin(delivery.url), step.error)
            self._inbox.put(_Retry(delivery.id, step.next_attempt_at))
            return
        if step.status is DeliveryStatus.FAILED:
            log.warning(
                "webhook %s to %s failed after %d attempts: %s", delivery.id, origin(delivery.url), number, step.error
            )
        self._settle()

    def _settle(self) -> None:
        with self._idle:
            self._unsettled = max(0, self._unsettled - 1)
            self._idle.notify_all()
