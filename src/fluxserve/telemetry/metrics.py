"""The server's Prometheus metrics, in a registry of its own (one per app, never the global one).

Every name starts with ``fluxserve_``; no label carries an API key or anything a client chose
freely (routes are templates, statuses are classes), so the series stay few. The README's
operations section lists them with queries. Queue depth, running jobs and device memory are
read when Prometheus scrapes; the rest are counted as things happen, by the code that sees them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format's media type."""

JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600, 1200)
"""Seconds in the queue or at work: from a tiny model's tenth of a second to a large batch's minutes."""
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)
"""Seconds per denoising step: a small image on a fast GPU to a large one offloaded to the CPU."""
LOAD_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
"""Seconds to load a model: from a warm disk cache to a download of tens of gigabytes."""


@dataclass(frozen=True)
class ModelLoad:
    """Jobs waiting for one model and jobs running on it, read at scrape time."""

    queued: int
    running: int


class Metrics:
    """The collectors, and one method for each thing the server counts or times."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._queue = Histogram(
            "fluxserve_queue_seconds", "Time jobs waited in the queue before a worker started them", ["model"],
            buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self._duration = Histogram(
            "fluxserve_job_duration_seconds", "Time from a job's start to its end, by how it ended",
            ["model", "status"], buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self._steps = Histogram(
            "fluxserve_step_seconds", "Seconds per denoising step (local models)", ["model"],
            buckets=STEP_BUCKETS, registry=r,
        )  # fmt: skip
        self._load = Histogram(
            "fluxserve_model_load_seconds", "Time to load a model (and warm it up)", ["model"],
            buckets=LOAD_BUCKETS, registry=r,
        )  # fmt: skip
        self._jobs = Counter("fluxserve_jobs", "Jobs that ended, by status", ["model", "status"], registry=r)
        self._images = Counter("fluxserve_images", "Images generated", ["model"], registry=r)
        self._megapixels = Counter(
            "fluxserve_megapixels", "Megapixels generated (1024 x 1024 pixels each)", ["model"], registry=r
        )
        self._http = Counter(
            "fluxserve_http_requests", "HTTP requests, by route template and status class",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self._webhooks = Counter(
            "fluxserve_webhook_deliveries", "Webhook delivery attempts, by outcome (delivered, retry, failed)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self._provider_calls = Counter(
            "fluxserve_provider_calls", "Generations sent to hosted providers, by outcome (ok or an error code)",
            ["provider", "outcome"], registry=r,
        )  # fmt: skip
        self._provider_cost = Counter(
            "fluxserve_provider_cost_usd", "What hosted providers reported charging, in US dollars", ["provider"],
            registry=r,
        )  # fmt: skip
        self._scraped = _AtScrape()
        r.register(self._scraped)

    def watch_models(self, read: Callable[[], Mapping[str, ModelLoad]]) -> None:
        """Report queue depth and running jobs per model from ``read``, called at each scrape."""
        self._scraped.models = read

    def render(self) -> bytes:
        """Everything, in the Prometheus text format."""
        return generate_latest(self.registry)

    def job_started(self, model: str, queued_seconds: float) -> None:
        self._queue.labels(model).observe(max(0.0, queued_seconds))

    def job_ended(self, model: str, status: str, run_seconds: float | None) -> None:
        """A job that ended; ``run_seconds`` is None for one that never started (canceled in the queue)."""
        self._jobs.labels(model, status).inc()
        if run_seconds is not None:
            self._duration.labels(model, status).observe(max(0.0, run_seconds))

    def images_made(self, model: str, images: int, megapixels: float) -> None:
        self._images.labels(model).inc(images)
        self._megapixels.labels(model).inc(megapixels)

    def step(self, model: str, seconds: float) -> None:
        self._steps.labels(model).observe(seconds)

    def model_loaded(self, model: str, seconds: float) -> None:
        self._load.labels(model).observe(seconds)

    def http_request(self, method: str, route: str, status: int) -> None:
        self._http.labels(method, route, f"{status // 100}xx").inc()

    def webhook_attempt(self, outcome: str) -> None:
        self._webhooks.labels(outcome).inc()

    def provider_call(self, provider: str, outcome: str, cost_usd: float | None = None) -> None:
        self._provider_calls.labels(provider, outcome).inc()
        if cost_usd:
            self._provider_cost.labels(provider).inc(cost_usd)


class NoMetrics(Metrics):
    """Counts nothing: what a server with ``metrics = false`` records into."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()

    def watch_models(self, read: Callable[[], Mapping[str, ModelLoad]]) -> None:
        pass

    def job_started(self, model: str, queued_seconds: float) -> None:
        pass

    def job_ended(self, model: str, status: str, run_seconds: float | None) -> None:
        pass

    def images_made(self, model: str, images: int, megapixels: float) -> None:
        pass

    def step(self, model: str, seconds: float) -> None:
        pass

    def model_loaded(self, model: str, seconds: float) -> None:
        pass

    def http_request(self, method: str, route: str, status: int) -> None:
        pass

    def webhook_attempt(self, outcome: str) -> None:
        pass

    def provider_call(self, provider: str, outcome: str, cost_usd: float | None = None) -> None:
        pass


class _AtScrape(Collector):
    """The gauges read when Prometheus scrapes: queues and running jobs per model, device memory."""

    def __init__(self) -> None:
        self.models: Callable[[], Mapping[str, ModelLoad]] = dict

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration: the names are fixed

    def collect(self) -> Iterable[Metric]:
        queued = GaugeMetricFamily("fluxserve_queue_depth", "Jobs waiting for each model", labels=["model"])
        running = GaugeMetricFamily("fluxserve_jobs_running", "Jobs running on each model", labels=["model"])
        for model, load in self.models().items():
            queued.add_metric([model], load.queued)
            running.add_metric([model], load.running)
        yield queued
        yield running
        yield from device_memory()


def device_memory() -> Iterable[Metric]:
    """Memory torch's CUDA allocator holds for tensors, now and at its peak, per device.

    Only where torch is already imported (a local model is served) and CUDA is available: a
    scrape never imports torch, and a CPU server has no such series.
    """
    cuda = getattr(sys.modules.get("torch"), "cuda", None)  # None too while another thread imports torch
    if cuda is None or not cuda.is_initialized():
        return
    used = GaugeMetricFamily("fluxserve_device_memory_bytes", "Device memory in use by tensors", labels=["device"])
    peak = GaugeMetricFamily(
        "fluxserve_device_memory_peak_bytes", "The most device memory tensors used since start", labels=["device"]
    )
    for index in range(cuda.device_count()):
        device = f"cuda:{index}"
        used.add_metric([device], cuda.memory_allocated(index))
        peak.add_metric([device], cuda.max_memory_allocated(index))
    yield used
    yield peak
