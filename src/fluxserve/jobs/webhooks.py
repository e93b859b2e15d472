"""Webhook delivery for jobs, signed per the Standard Webhooks spec (https://www.standardwebhooks.com/).

Worker threads call :meth:`WebhookSender.notify` and move on: it only hands the event over in memory.
The sender's scheduler thread turns each event into a row of ``webhook_deliveries`` (status
``pending``) before the first attempt, so a delivery survives a crash and is resumed by the next
:meth:`WebhookSender.start`. A few sender threads make the attempts, so one slow or dead receiver
holds up one thread, not every delivery. Each delivery keeps its id and body across retries; the
timestamp header and the signature are made afresh for each attempt.

Delivery is at least once: a crash between a receiver's 2xx and the row's update sends it again,
and receivers deduplicate by ``webhook-id``. Events of one job may arrive out of order (a retried
``started`` after ``completed``): the body's ``timestamp`` and ``data.status`` say which is newer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import heapq
import hmac
import json
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx

from fluxserve.db import Database
from fluxserve.errors import InvalidRequest
from fluxserve.jobs.models import Job
from fluxserve.jobs.views import WebhookDeliveryView, job_view, view_json
from fluxserve.jobs.webhook_addresses import Resolver, forbidden, literal, resolve
from fluxserve.jobs.webhook_client import ForbiddenAddress, webhook_client
from fluxserve.settings import Settings
from fluxserve.storage.files import write_atomically
from fluxserve.storage.signing import UrlSigner

log = logging.getLogger("fluxserve.webhooks")


def origin(url: str | httpx.URL) -> str:
    """``scheme://host[:port]`` of a webhook URL, for logs: its path and query may hold the receiver's token."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL:
        return "(an invalid URL)"
    port = "" if parsed.port is None else f":{parsed.port}"
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}{port}"


class _OriginsOnly(logging.Filter):
    """httpx logs each request's full URL at INFO: on the sender threads, log only the webhook URL's origin."""

    def filter(self, record: logging.LogRecord) -> bool:
        if threading.current_thread().name.startswith("webhooks-send-") and isinstance(record.args, tuple):
            record.args = tuple(origin(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args)
        return True


logging.getLogger("httpx").addFilter(_OriginsOnly())

SECRET_PREFIX = "whsec_"
SECRET_FILE = "webhook-secret"
SECRET_BYTES = 32
"""The spec asks for 24 to 64 random bytes."""
MIN_SECRET_BYTES = 24
MAX_URL_LENGTH = 2048
USER_AGENT = "fluxserve-webhooks"
SENDER_THREADS = 4
_MAX_REASON = 200


# -- the signing secret ----------------------------------------------------------------------


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; refuse anything else so a typo cannot sign with a weak key."""
    how = (
        "the webhook secret must be 'whsec_' followed by the base64 of at least 24 random bytes "
        "('whsec_' + base64 of secrets.token_bytes(32) will do), or leave webhook_secret unset "
        "to have the server make one and keep it in the data dir"
    )
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidRequest(how, param="webhook_secret")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(how, param="webhook_secret") from None
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidRequest(how, param="webhook_secret")
    return key


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def load_or_create_secret(data_dir: Path, configured: str | None) -> str:
    """The configured secret, else the one kept in the data dir, made on first use.

    Kept on disk so receivers configured with it keep verifying deliveries after a restart.
    """
    if configured is not None:
        secret_key(configured)
        return configured
    path = data_dir / SECRET_FILE
    if path.exists():
        secret = path.read_text(encoding="ascii", errors="replace").strip()
        try:
            secret_key(secret)
        except InvalidRequest:
            raise InvalidRequest(
                f"{path} does not hold a webhook secret ('whsec_' + base64); fix it, or delete it to make a new "
                "one (receivers then need the new secret)",
                param="webhook_secret",
            ) from None
        return secret
    secret = new_secret()
    write_atomically(path, (secret + "\n").encode("ascii"))
    path.chmod(0o600)
    return secret


# -- URLs and signatures ---------------------------------------------------------------------


def check_webhook_url(url: str) -> str:
    """Accept only absolute http(s) URLs with a host: the sender must never open files or run other schemes."""
    how = "send webhook_url as an absolute http:// or https:// URL with a host, such as https://example.com/hooks/jobs"
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"webhook_url is longer than {MAX_URL_LENGTH} characters; {how}", param="webhook_url")
    if any(character.isspace() or not character.isprintable() for character in url):
        raise InvalidRequest(f"webhook_url contains spaces or control characters; {how}", param="webhook_url")
    try:
        parsed = httpx.URL(url)  # what the sender will send to, so the same parser judges it
        _ = parsed.host, parsed.port  # an IDNA label that does not decode fails only when read
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise InvalidRequest(f"webhook_url is not a valid URL; {how}", param="webhook_url") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidRequest(
            f"webhook_url scheme {parsed.scheme or '(none)'!r} is not allowed; {how}", param="webhook_url"
        )
    if not parsed.host:
        raise InvalidRequest(f"webhook_url has no host; {how}", param="webhook_url")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise InvalidRequest(f"webhook_url port {parsed.port} is out of range; {how}", param="webhook_url")
    address = literal(parsed.host)
    if address is not None and forbidden(address):
        raise InvalidRequest(
            f"webhook_url points at {address}, a link-local, metadata, unspecified or multicast address, "
            "which this server never posts to; use the receiver's own address",
            param="webhook_url",
        )
    return url


def new_delivery_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def sign(key: bytes, delivery_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value: v1 is HMAC-SHA256 over ``id.timestamp.body``, base64."""
    digest = hmac.new(key, f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(key: bytes, delivery_id: str, body: str, now: float) -> dict[str, str]:
    """Headers for one attempt; the timestamp is the attempt's, so receivers' replay windows accept retries."""
    timestamp = int(now)
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, delivery_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def event_body(job: Job, event: str, at: float, signer: UrlSigner) -> str:
    """The JSON body: ``type``, ``timestamp`` (ISO 8601 UTC) and the job as GET /v1/jobs/{id} shows it."""
    base_url = job.webhook.base_url if job.webhook is not None else ""
    payload = {
        "type": f"job.{event}",
        "timestamp": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": view_json(job_view(job, base_url, signer)),
    }
    return json.dumps(payload, separators=(",", ":"))


# -- what one attempt gave and what follows ----------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """The outcome of one POST: a status code, or the reason none came."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False
    """A failure that retrying cannot fix (a URL httpx cannot send to)."""


@dataclass(frozen=True)
class Step:
    """What to record after an attempt."""

    status: Literal["pending", "delivered", "failed"]
    next_attempt_at: float | None
    error: str | None


def next_step(attempt: Attempt, number: int, settings: Settings, now: float) -> Step:
    """Decide after attempt ``number``: 2xx is done, 429/5xx/no answer retry with backoff, the rest fail now.

    Redirects are not followed: a receiver that moved should be given its new URL, and following
    would let a webhook URL bounce the signed body somewhere the client never named.
    """
    code = attempt.status_code
    if code is not None and 200 <= code < 300:
        return Step("delivered", None, None)
    error = attempt.error or f"HTTP {code}"
    if code is not None and 300 <= code < 400:
        error += " (redirects are not followed)"
    retryable = (code is None and not attempt.permanent) or code == 429 or (code is not None and 500 <= code < 600)
    if not retryable or number >= settings.webhook_max_attempts:
        return Step("failed", None, error)
    delay = settings.webhook_retry_base_seconds * 2 ** (number - 1)
    if attempt.retry_after is not None and code in (429, 503):
        delay = attempt.retry_after
    return Step("pending", now + min(delay, settings.webhook_retry_max_seconds), error)


def retry_after_seconds(value: str | None) -> float | None:
    """A numeric ``Retry-After``; an HTTP date or nonsense is ignored (plain backoff applies)."""
    if value is None or not (value.strip().isascii() and value.strip().isdigit()):
        return None
    return float(value.strip())


def failure_reason(error: httpx.TransportError, timeout: float) -> str:
    """A short reason for an attempt that got no answer, for people reading the delivery record."""
    if isinstance(error, httpx.TimeoutException):
        return f"timed out after {timeout:g} s"
    causes: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, ConnectionRefusedError) or "connection refused" in str(c).lower() for c in causes):
        return "connection refused"
    if isinstance(error, httpx.ConnectError):
        return f"could not connect: {error}"[:_MAX_REASON]
    return f"{type(error).__name__}: {error}"[:_MAX_REASON]


def post(client: httpx.Client, url: str, headers: dict[str, str], body: str, timeout: float) -> Attempt:
    """POST once with a :func:`webhook_client`; the receiver's body is never read, so a huge answer costs nothing.

    A host that is or resolves to a forbidden address fails for good; one that does not resolve is retried.
    """
    try:
        with client.stream("POST", url, content=body.encode(), headers=headers) as response:
            return Attempt(response.status_code, retry_after=retry_after_seconds(response.headers.get("retry-after")))
    except ForbiddenAddress as error:
        return Attempt(error=str(error)[:_MAX_REASON], permanent=True)
    except httpx.UnsupportedProtocol as error:
        return Attempt(error=f"cannot send to this URL: {error}"[:_MAX_REASON], permanent=True)
    except httpx.TransportError as error:
        return Attempt(error=failure_reason(error, timeout))
    except httpx.InvalidURL as error:
        return Attempt(error=f"invalid URL: {error}"[:_MAX_REASON], permanent=True)


# -- the sender ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Notice:
    job: Job
    event: str
    at: float


@dataclass(frozen=True)
class _Retry:
    delivery_id: str
    due: float


@dataclass(frozen=True)
class _Stop:
    pass


@dataclass(frozen=True)
class _Delivery:
    id: str
    url: str
    payload: str
    attempts: int


class WebhookSender:
    """Posts jobs' lifecycle events to their webhooks, retrying with backoff, recording every attempt.

    One scheduler thread owns the due-time heap; ``threads`` sender threads make the HTTP attempts.
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
    ) -> None:
        self._store, self._settings, self._signer, self._resolver = store, settings, signer, resolver
        self._key = secret_key(secret)
        self._thread_count = threads
        self._inbox: queue.SimpleQueue[_Notice | _Retry | _Stop] = queue.SimpleQueue()
        self._work: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._unsettled = 0
        """Events handed over and deliveries pending that this sender has not finished with."""

    # -- called from other threads -------------------------------------------------------
    def notify(self, job: Job, event: str) -> None:
        """Hand over a lifecycle event of ``job`` (as it is now); never waits on the network or the database."""
        if job.webhook is None or event not in job.webhook.events:
            return
        with self._idle:
            self._unsettled += 1
            self._inbox.put(_Notice(job, event, time.time()))

    def start(self) -> None:
        """Start the threads and resume every delivery left pending, by a crash or a stop."""
        if self._threads:
            raise RuntimeError("the webhook sender is already running")
        self._stopping.clear()
        self._work = queue.SimpleQueue()
        pending = self._pending_rows()
        with self._idle:
            self._keep_only_notices()
            self._unsettled = len(pending) + self._inbox.qsize()
        self._threads = [threading.Thread(target=self._schedule, args=(pending,), name="webhooks", daemon=True)]
        self._threads += [
            threading.Thread(target=self._send_loop, name=f"webhooks-send-{n}", daemon=True)
            for n in range(self._thread_count)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop soon: no new attempt starts, one under way finishes (at most the timeout); pending rows stay pending.

        Events handed over but not yet recorded are written as pending rows first, so none is lost.
        """
        if not self._threads:  # never started: still keep what was handed over
            self._record_remaining()
            return
        self._stopping.set()
        scheduler, senders = self._threads[0], self._threads[1:]
        for _ in senders:
            self._work.put(None)
        for thread in senders:  # connect, send and read may each take up to the timeout
            thread.join(self._settings.webhook_timeout_seconds * 3 + 5)
        self._inbox.put(_Stop())
        scheduler.join()
        self._threads = []
        with self._idle:
            self._unsettled = self._inbox.qsize()  # events handed over after the scheduler ended
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every event handed over is delivered or failed; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unsettled == 0, timeout)

    def deliveries(self, job_id: str) -> list[WebhookDeliveryView]:
        """The deliveries of a job, oldest first, as recorded."""
        rows = self._store.fetch_all(
            "SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY created_at, rowid", (job_id,)
        )
        return [
            WebhookDeliveryView(
                id=row["id"],
                event=row["event"],
                status=row["status"],
                attempts=row["attempts"],
                last_status_code=row["last_status_code"],
                last_error=row["last_error"],
                created_at=row["created_at"],
                delivered_at=row["delivered_at"],
            )
            for row in rows
        ]

    # -- the scheduler thread ----------------------------------------------------------------
    def _pending_rows(self) -> list[tuple[float, str]]:
        rows = self._store.fetch_all(
            "SELECT id, next_attempt_at, created_at FROM webhook_deliveries WHERE status = 'pending' "
            "ORDER BY created_at, rowid"
        )
        return [(row["next_attempt_at"] or row["created_at"], row["id"]) for row in rows]

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
        assert notice.job.webhook is not None  # notify() let only jobs with a webhook through
        try:
            delivery_id = new_delivery_id()
            self._store.execute(
                "INSERT INTO webhook_deliveries (id, job_id, event, url, payload, status, attempts, next_attempt_at, "
                "created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                (
                    delivery_id,
                    notice.job.id,
                    notice.event,
                    notice.job.webhook.url,
                    event_body(notice.job, notice.event, notice.at, self._signer),
                    notice.at,
                    notice.at,
                ),
            )
            return delivery_id
        except Exception:
            log.exception("could not record the %s webhook of job %s", notice.event, notice.job.id)
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
        """At stop: events still in the inbox become pending rows for the next start."""
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

    def _load(self, delivery_id: str) -> _Delivery | None:
        row = self._store.fetch_one(
            "SELECT id, url, payload, attempts FROM webhook_deliveries WHERE id = ? AND status = 'pending'",
            (delivery_id,),
        )
        return None if row is None else _Delivery(row["id"], row["url"], row["payload"], row["attempts"])

    def _attempt(self, client: httpx.Client, delivery_id: str) -> None:
        """One attempt at one delivery, recorded; a retry goes back to the scheduler with its due time."""
        delivery = self._load(delivery_id)
        if delivery is None:  # the job was deleted meanwhile
            self._settle()
            return
        number = delivery.attempts + 1
        headers = signed_headers(self._key, delivery.id, delivery.payload, time.time())
        outcome = post(client, delivery.url, headers, delivery.payload, self._settings.webhook_timeout_seconds)
        now = time.time()
        step = next_step(outcome, number, self._settings, now)
        self._store.execute(
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, last_status_code = ?, "
            "last_error = ?, delivered_at = ? WHERE id = ? AND status = 'pending'",
            (
                step.status,
                number,
                step.next_attempt_at,
                outcome.status_code,
                step.error,
                now if step.status == "delivered" else None,
                delivery.id,
            ),
        )
        if step.next_attempt_at is not None:
            log.info("webhook %s to %s: %s; retrying", delivery.id, origin(delivery.url), step.error)
            self._inbox.put(_Retry(delivery.id, step.next_attempt_at))
            return
        if step.status == "failed":
            log.warning(
                "webhook %s to %s failed after %d attempts: %s", delivery.id, origin(delivery.url), number, step.error
            )
        self._settle()

    def _settle(self) -> None:
        with self._idle:
            self._unsettled = max(0, self._unsettled - 1)
            self._idle.notify_all()
