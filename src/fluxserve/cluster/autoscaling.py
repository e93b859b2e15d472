"""Autoscaling a model deployment on the store's queue depth (a Ray Serve custom autoscaling policy).

Every model replica reports, through Ray Serve's ``record_autoscaling_stats``, the jobs waiting
for its model in the shared store (:data:`QUEUED`: the same number from every replica), the
jobs it runs itself (:data:`RUNNING`) and whether it is still loading its model (:data:`LOADING`).
The policy asks for enough replicas that each has ``target`` jobs, queued and running together,
and for one while a replica loads (so that the first replica of a deployment allowed to go to
zero publishes what the model accepts before it goes). Ray Serve clips that to the deployment's
``min_replicas``/``max_replicas`` and applies its upscale and downscale delays.

At zero replicas nobody reports: the deployment wakes on calls waiting at its handles (the
ingress calls ``wake`` while the store holds jobs for the model), which Ray Serve counts in the
context's ``total_num_requests``.

Ray Serve pickles this module by value into its controller: it imports nothing of fluxserve, and
reads the context Ray hands it (:class:`ray.serve.config.AutoscalingContext`) by attribute.
"""

from __future__ import annotations

import math
from typing import Any

QUEUED = "queued"
"""Jobs waiting for the model in the store."""
RUNNING = "running"
"""Jobs the reporting replica runs."""
LOADING = "loading"
"""1 while the reporting replica loads its model, else 0."""


def desired_replicas(queued: float, running: float, target: float, *, loading: bool = False) -> int:
    """Replicas for ``queued`` waiting and ``running`` running jobs at ``target`` jobs per replica;
    at least one while a replica loads its model."""
    return max(math.ceil((queued + running) / target), 1 if loading else 0)


class QueueDepthPolicy:
    """A Ray Serve autoscaling policy (a class: Serve makes it once, with ``policy_kwargs``)."""

    def __init__(self, target: float) -> None:
        self.target = target

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        latest = _latest_per_replica(ctx.raw_metrics or {})
        if QUEUED not in latest:  # no replica reports (none runs, or none has yet): keep what there is,
            woken = ctx.current_num_replicas == 0 and ctx.total_num_requests > 0  # or wake for a call
            return max(ctx.target_num_replicas, 1 if woken else 0), {}
        queued = max(latest[QUEUED].values())  # each replica counts the one shared queue
        running = sum(latest.get(RUNNING, {}).values())
        loading = any(latest.get(LOADING, {}).values())
        return desired_replicas(queued, running, self.target, loading=loading), {}


def _latest_per_replica(raw: dict[str, dict[Any, Any]]) -> dict[str, dict[Any, float]]:
    """Each metric's latest value from each replica (raw time series: no look-back averaging)."""
    latest: dict[str, dict[Any, float]] = {}
    for metric, series_by_replica in raw.items():
        values = {replica: series[-1].value for replica, series in series_by_replica.items() if series}
        if values:
            latest[metric] = values
    return latest
