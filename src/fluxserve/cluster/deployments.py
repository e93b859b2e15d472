"""fluxserve as a Ray Serve application: model replicas that claim jobs, and a stateless HTTP ingress.

One application (:data:`APP_NAME`), three kinds of process, one Postgres store between them:

- **model replicas**, one deployment per served model (:class:`ModelReplica`): each loads the
  model's pipeline (on one GPU where the model runs on ``cuda``) and runs the worker that claims
  that model's jobs from the store on leases, as a ``fluxserve serve`` process does. It takes no
  requests: the store is its queue. Ray Serve checks its health (the worker's threads run and the
  database answers), replaces a replica that died, and scales the deployment between
  ``ray_min_replicas`` and ``ray_max_replicas`` on the queue
  (:class:`~fluxserve.cluster.autoscaling.QueueDepthPolicy`, fed by ``record_autoscaling_stats``).
  Its one request is :meth:`ModelReplica.wake`: a call that, waiting at the deployment's handle,
  is what wakes a deployment scaled to zero.
- **ingress replicas** (:class:`Ingress`, ``ray_ingress_replicas`` of them) behind Ray Serve's
  HTTP proxy: the whole API (:func:`fluxserve.api.app.create_app`) with ``run_workers = false``.
  They queue jobs in the store, serve watchers through the store's events (LISTEN/NOTIFY), and
  validate requests against the capabilities model replicas publish in the store when they load.
  While the store holds queued jobs for a model, each ingress keeps a call to the model's
  ``wake`` going (:class:`QueueWaker`): at zero replicas it waits at the handle, and Ray Serve
  starts a replica for it.
- the **driver** (``fluxserve serve --ray``, :func:`run_on_ray`) deploys it and waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from fluxserve.errors import MissingExtra

try:
    import ray
    from ray import serve
    from ray.serve import Application
    from ray.serve.config import AutoscalingConfig, AutoscalingPolicy
    from ray.serve.handle import DeploymentHandle
except ImportError as error:  # pragma: no cover - the tests run with the extra
    raise MissingExtra("ray", "serve --ray", error.name or "ray") from None

from fluxserve.api.app import build_services, create_app
from fluxserve.cluster.autoscaling import LOADING, QUEUED, RUNNING, QueueDepthPolicy
from fluxserve.cluster.plan import ModelDeployment, check_shared_store, model_deployments
from fluxserve.engines.registry import create_engines
from fluxserve.jobs.status import WorkerState
from fluxserve.jobs.store import JobStore
from fluxserve.jobs.worker import ModelWorker
from fluxserve.settings import Settings, load_settings
from fluxserve.storage.private import private_dir
from fluxserve.storage.signing import load_or_create_signing_key
from fluxserve.webhooks.secret import load_or_create_secret
from fluxserve.wiring import engine_options, provider_options

log = logging.getLogger("fluxserve.cluster")

APP_NAME = "fluxserve"
INGRESS_NAME = "ingress"
HEALTH_CHECK_SECONDS = 5.0
"""How often Ray Serve asks a model replica whether it is healthy."""


class ModelReplica:
    """One replica of a model's deployment: its pipeline and the worker that claims its jobs."""

    def __init__(self, settings: Settings, model: str) -> None:
        self._stopped = False
        own = settings.model_copy(update={"models": [model], "model_aliases": {}, "run_workers": True})
        self._model = model
        self._engines = create_engines({model: engine_options(own, model)}, provider_options(own))
        self._services = build_services(own, self._engines)
        self._services.start()  # the worker loads the model on its thread, then claims jobs
        log.info("model replica of %s started (pid %d)", model, os.getpid())

    @property
    def _worker(self) -> ModelWorker:
        return self._services.jobs.workers[self._model]

    async def check_health(self) -> None:
        """Ray Serve replaces a replica whose worker stopped (its model failed to load) or that
        cannot reach the database."""
        worker = self._worker
        if not worker.alive:
            raise RuntimeError(f"model {self._model}: its worker is not running ({worker.state}: {worker.load_error})")
        await asyncio.to_thread(self._services.db.fetch_one, "SELECT 1")

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """The queue depth of this model in the store, the jobs this replica holds and whether it
        still loads the model, for the policy."""
        worker = self._worker
        queued = await asyncio.to_thread(lambda: worker.queued)
        loading = worker.state is WorkerState.LOADING
        return {QUEUED: float(queued), RUNNING: float(worker.holding), LOADING: float(loading)}

    async def wake(self) -> None:
        """Called by the ingress while jobs for this model wait: the call itself is what starts a
        replica of a deployment at zero; here the worker looks in the store at once."""
        self._worker.wake()

    def describe(self) -> dict[str, Any]:
        """Who this replica is: its process and its worker's id in the store (``host/pid/model/token``)."""
        return {"pid": os.getpid(), "worker": self._worker.id, "state": self._worker.state.value}

    def __del__(self) -> None:
        """Ray Serve's graceful stop: running jobs go back to the queue, then the store is closed
        (once: the garbage collector may call this again)."""
        if self._stopped or getattr(self, "_services", None) is None:
            return
        self._stopped = True
        self._services.stop()
        for engine in self._engines.values():
            engine.close()


class QueueWaker:
    """Wakes a model's deployment while jobs for it wait in the store.

    Every ``every`` seconds it counts the model's queued jobs; while there are some, it calls the
    replicas' :meth:`ModelReplica.wake` through the deployment's handle and waits for the call to
    return. With replicas running, that takes a moment. At zero replicas the call waits at the
    handle, and Ray Serve starts a replica for a call that waits (its scale-from-zero path).
    Polling rather than waking on each submission also catches jobs queued by other ingresses
    or put back by a replica that stopped.
    """

    def __init__(self, model: str, handle: DeploymentHandle, store: JobStore, every: float) -> None:
        self.model = model
        self._handle = handle.options(method_name="wake")
        self._store = store
        self._every = every
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wake-{model}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.wait(self._every):
            try:
                if self._store.queued_count(self.model) > 0:
                    self._wake()
            except Exception:  # the database down, the deployment being replaced: try again next time
                log.exception("could not wake the deployment of model %s", self.model)

    def _wake(self) -> None:
        response = self._handle.remote()
        while not self._stopping.is_set():
            try:
                response.result(timeout_s=self._every)
                return
            except TimeoutError:  # no replica yet: the call keeps waiting at the handle
                continue
        response.cancel()


class Ingress:
    """An HTTP ingress replica: the API without workers (``run_workers = false``) over the shared store."""

    def __init__(self, settings: Settings, *models: DeploymentHandle) -> None:
        self._settings = settings.model_copy(update={"run_workers": False})
        self._models = dict(zip(settings.models, models, strict=True))
        """Each model's deployment (one per served model, in the order of ``models``): bound here so
        that Serve deploys them with the application; jobs reach them through the store, and only
        :class:`QueueWaker`'s calls go through these handles."""
        self._wakers: list[QueueWaker] = []

    def __serve_build_asgi_app__(self) -> Any:
        app = create_app(self._settings)
        store, every = app.state.services.jobs.store, self._settings.queue_poll_seconds
        self._wakers = [QueueWaker(model, handle, store, every) for model, handle in self._models.items()]
        for waker in self._wakers:
            waker.start()
        return app

    def __del__(self) -> None:
        for waker in getattr(self, "_wakers", []):
            waker.stop()


IngressDeployment = serve.ingress()(Ingress)


def _model_deployment(plan: ModelDeployment, settings: Settings) -> Any:
    autoscaling = AutoscalingConfig(
        min_replicas=settings.ray_min_replicas,
        max_replicas=settings.ray_max_replicas,
        initial_replicas=first_replicas(settings),
        upscale_delay_s=settings.ray_upscale_delay_seconds,
        downscale_delay_s=settings.ray_downscale_delay_seconds,
        downscale_to_zero_delay_s=max(settings.ray_downscale_delay_seconds, WAKE_MEMORY_SECONDS),
        policy=AutoscalingPolicy(
            policy_function=QueueDepthPolicy, policy_kwargs={"target": settings.ray_target_queue_per_replica}
        ),
    )
    return serve.deployment(
        ModelReplica,
        name=plan.name,
        ray_actor_options={"num_cpus": plan.num_cpus, "num_gpus": plan.num_gpus},
        autoscaling_config=autoscaling,
        health_check_period_s=HEALTH_CHECK_SECONDS,
        graceful_shutdown_timeout_s=settings.lease_seconds,
    )


_RAY_DEFAULTS = AutoscalingConfig()
WAKE_MEMORY_SECONDS = _RAY_DEFAULTS.look_back_period_s + 2 * _RAY_DEFAULTS.metrics_interval_s
"""How long Ray Serve may still count a ``wake`` call that waited at a handle for a replica (50 s):
a handle reports the calls waiting at it over ``look_back_period_s`` (30 s) every
``metrics_interval_s`` (10 s), and the controller keeps a report until the next (one interval,
and one more for a late one). A deployment that went to zero sooner after its last wake would be
woken once more by that old count, so it waits at least this long before going from one replica
to zero (``downscale_to_zero_delay_s``)."""


def first_replicas(settings: Settings) -> int | None:
    """Replicas a model deployment starts with: one where it may go to zero, so that a replica loads
    the model and publishes what it accepts (the ingress answers 503 for a model none has
    published), then goes once idle for ``ray_downscale_delay_seconds``; else ``ray_min_replicas``."""
    return 1 if settings.ray_min_replicas == 0 else None


def build_application(settings: Settings, *, cluster_gpus: float | None = None) -> Application:
    """The Ray Serve application for ``settings``: one deployment per model, then the ingress.

    ``cluster_gpus``: the GPUs a model on the default device may use (default: the connected
    cluster's, none when Ray is not initialised); it decides ``num_gpus`` per replica.
    """
    check_shared_store(settings)
    _make_secrets(settings)
    if cluster_gpus is None:
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0
    models = [
        _model_deployment(plan, settings).bind(settings, plan.model)
        for plan in model_deployments(settings, cluster_gpus)
    ]
    ingress = serve.deployment(
        IngressDeployment,
        name=INGRESS_NAME,
        num_replicas=settings.ray_ingress_replicas,
        ray_actor_options={"num_cpus": settings.ray_ingress_num_cpus},
    )
    return ingress.bind(settings, *models)


def _make_secrets(settings: Settings) -> None:
    """Make the URL-signing key and webhook secret in ``data_dir`` (where not set) before any replica
    starts: replicas sharing ``data_dir`` then read the same ones, rather than race to make their own."""
    private_dir(settings.data_dir)
    load_or_create_signing_key(settings.data_dir, settings.url_signing_secret)
    load_or_create_secret(settings.data_dir, settings.webhook_secret)


def app_builder(args: dict[str, str]) -> Application:
    """For ``serve run fluxserve.cluster.deployments:app_builder [config=fluxserve.toml]`` or a
    ``serve deploy`` config: the settings from the TOML file ``config`` and the environment."""
    config = args.get("config")
    return build_application(load_settings(config_file=None if config is None else Path(config)))


def run_on_ray(settings: Settings) -> None:
    """Deploy fluxserve on the Ray cluster ``ray_address`` (default: the local one, or a new one)
    with the HTTP proxy on ``host``:``port``; stop it (delete the application) on Ctrl-C or SIGTERM.

    Both signals get handlers of their own, as uvicorn's do: a process started where SIGINT is
    ignored (a background job of a non-interactive shell) would otherwise never see Ctrl-C, and a
    process manager stops services with SIGTERM."""
    check_shared_store(settings)  # before anything starts
    ray.init(address=settings.ray_address)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
    stopping = threading.Event()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda number, frame: stopping.set())
    log.info("fluxserve runs on Ray Serve at http://%s:%d; Ctrl-C stops it", settings.host, settings.port)
    while not stopping.wait(1.0):  # a timeout, so that the handler runs however the wait is blocked
        pass
    log.info("deleting the Ray Serve application %s", APP_NAME)
    serve.delete(APP_NAME)
