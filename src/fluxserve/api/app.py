"""``create_app(settings)``: the whole HTTP API, wired in one place.

The composition root: :func:`build_services` makes every part once (database, job store, files,
keys, event bus, URL signer, webhook sender, job service; on Postgres, the relay that shares job
events with the other processes on the database) and the routers get the ones they use through
the dependencies of :mod:`fluxserve.api.deps`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from fluxserve import __version__
from fluxserve.accounts.admission import Admission
from fluxserve.accounts.keystore import KeyStore
from fluxserve.accounts.policy import check_access
from fluxserve.accounts.usage import UsageReports
from fluxserve.api import errors
from fluxserve.api.deps import Services
from fluxserve.api.middleware import BodyLimit, BodyTimeout, Observed, OneBodyLength, RequestId, SecurityHeaders
from fluxserve.api.replicate.predictions import prediction_body
from fluxserve.api.routes import (
    admin,
    bfl,
    files,
    health,
    images,
    jobs,
    loras,
    metrics,
    models,
    replicate,
    rules,
    usage,
    workers_ai,
)
from fluxserve.db import open_database
from fluxserve.engines.aliases import alias_table
from fluxserve.engines.base import Engine
from fluxserve.engines.loras import LoraCatalog
from fluxserve.engines.registry import create_engines
from fluxserve.jobs import relay
from fluxserve.jobs.events import EventBus
from fluxserve.jobs.published import PublishedModels
from fluxserve.jobs.service import JobParts, JobService
from fluxserve.jobs.sql_store import SqlJobStore
from fluxserve.settings import Settings
from fluxserve.storage.files import open_file_store
from fluxserve.storage.private import private_dir
from fluxserve.storage.signing import UrlSigner, load_or_create_signing_key
from fluxserve.telemetry import Telemetry
from fluxserve.telemetry.metrics import Metrics, NoMetrics
from fluxserve.telemetry.tracing import Tracer, open_tracer
from fluxserve.web import routes as studio
from fluxserve.webhooks.secret import load_or_create_secret
from fluxserve.webhooks.sender import WebhookSender
from fluxserve.wiring import (
    bucket_options,
    content_credentials,
    content_filter,
    engine_options_per_model,
    lora_options,
    provider_options,
)

DESCRIPTION = """\
fluxserve serves FLUX image models through the OpenAI Images API, plus the controls FLUX has
and OpenAI lacks (seed, steps, guidance, reference images, structured JSON prompts). Every
request becomes a durable job, which the jobs API (`/v1/jobs`) exposes: submit, poll, watch live
progress as Server-Sent Events, cancel, list and delete; webhooks and `Idempotency-Key` too.
Errors have OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Send an API key as `Authorization: Bearer fsk_...` or `x-key: fsk_...` (a loopback server for which
no key was ever made runs without). Jobs and images belong to the key that made them; image URLs
are signed and expire, and open without a key. Keys carry rate limits and megapixel quotas;
`/v1/usage` reports what a key used, `/v1/admin/...` manages keys (admin keys only).
"""


# What a browser page on an allowed origin may send and read (CORS is off without cors_origins).
CORS_REQUEST_HEADERS = ["authorization", "x-key", "content-type", "idempotency-key", "prefer", "last-event-id"]
CORS_RESPONSE_HEADERS = ["x-request-id", "x-job-id", "retry-after", "location", "idempotent-replayed", "x-quota-reset"]


def _document_served_models(app: FastAPI, names: list[str]) -> None:
    """The OpenAPI document lists the models this server serves as the ``model`` field's values."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            for path in ("/v1/images/generations", "/v1/images/edits", "/v1/jobs"):
                for content in document["paths"][path]["post"]["requestBody"]["content"].values():
                    content["schema"]["properties"]["model"]["anyOf"][0]["enum"] = names
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def build_services(
    settings: Settings,
    engines: dict[str, Engine],
    *,
    clock: Callable[[], float] = time.time,
    tracer: Tracer | None = None,
) -> Services:
    """Every part of the server, each built once and handed to what uses it. Nothing runs until
    :meth:`Services.start`; :meth:`Services.stop` closes them. ``tracer`` replaces the one
    ``otlp_endpoint`` makes (tests: one that keeps spans in memory)."""
    private_dir(settings.data_dir)  # before any secret is kept there
    telemetry = Telemetry(
        metrics=Metrics() if settings.metrics else NoMetrics(),
        tracer=tracer if tracer is not None else open_tracer(settings.otlp_endpoint),
    )
    db = open_database(settings)
    file_store = None
    try:
        file_store = open_file_store(settings.data_dir, bucket_options(settings))
        file_store.check()  # a bucket that is missing or unreachable stops the server here, saying which
        store = SqlJobStore(db)
        signer = UrlSigner(
            load_or_create_signing_key(settings.data_dir, settings.url_signing_secret), settings.url_ttl_seconds, clock
        )
        secret = load_or_create_secret(settings.data_dir, settings.webhook_secret)
        bus = EventBus(db.next_boot(), settings.sse_max_pending_events)
        notices = db.listen(relay.CHANNEL)  # None on SQLite: one process, one bus
        parts = JobParts(
            store=store,
            files=file_store,
            bus=bus,
            signer=signer,
            keys=KeyStore(db, clock),
            admission=Admission(db, store.unfinished, clock),
            webhooks=WebhookSender(
                db, settings, secret, signer, bodies={"replicate": prediction_body}, telemetry=telemetry
            ),
            relay=None if notices is None else relay.EventRelay(db, notices, bus, store, file_store),
            published=PublishedModels(db),
            content_filter=content_filter(settings),
            credentials=content_credentials(settings, __version__),
            telemetry=telemetry,
        )
        jobs = JobService(settings, engines, parts)
    except BaseException:
        if file_store is not None:
            file_store.close()
        db.close()
        raise
    return Services(
        settings=settings,
        db=db,
        jobs=jobs,
        keys=parts.keys,
        usage=UsageReports(db),
        files=parts.files,
        bus=parts.bus,
        signer=signer,
        clock=clock,
        decode_slots=asyncio.Semaphore(settings.max_concurrent_decodes),
        started=int(time.time()),
        loras=LoraCatalog(lora_options(settings)),
        aliases=alias_table(settings.models, settings.model_aliases),
        telemetry=telemetry,
    )


class _App(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        return errors.LoggedOnce(super().build_middleware_stack())


def create_app(
    settings: Settings,
    engines: Mapping[str, Engine] | None = None,
    *,
    clock: Callable[[], float] = time.time,
    tracer: Tracer | None = None,
) -> FastAPI:
    """The ASGI app. ``engines`` defaults to one engine per ``settings.models``; ``clock`` times
    rate limits, quotas and URL expiry.

    Raises :class:`~fluxserve.errors.InsecureConfiguration` for a server that would be open to a
    network by accident.
    """
    chosen = (
        dict(engines)
        if engines is not None
        else create_engines(engine_options_per_model(settings), provider_options(settings))
    )
    services = build_services(settings, chosen, clock=clock, tracer=tracer)
    try:
        check_access(settings, services.keys)
    except BaseException:
        services.files.close()
        services.db.close()
        raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            services.stop()
            if engines is None:  # made here, so closed here (a hosted engine holds connections)
                for engine in chosen.values():
                    engine.close()

    app = _App(title="fluxserve", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.services = services
    errors.install(app)
    # replicate before models: its /v1/models/{owner}/{name} must not be read as models' {model_id:path}
    for module in (images, jobs, files, replicate, models, loras, rules, usage, admin, health):
        app.include_router(module.router)
    app.include_router(studio.router)
    app.include_router(workers_ai.router)
    if settings.metrics:
        app.include_router(metrics.router(settings.metrics_require_key))
    app.include_router(bfl.router)  # last: its /v1/{model} must not shadow another /v1/ route
    _document_served_models(app, list(chosen))
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyTimeout, seconds=settings.body_timeout_seconds)
    app.add_middleware(OneBodyLength)  # outside BodyLimit, which trusts Content-Length
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_RESPONSE_HEADERS,
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)
    if settings.metrics or services.telemetry.tracer.enabled:  # outside every refusal, so each is counted
        app.add_middleware(Observed, metrics=services.telemetry.metrics, tracer=services.telemetry.tracer)
    app.add_middleware(RequestId)
    return app
