"""Autoscaling a model deployment on the store's queue depth (a Ray Serve custom autoscaling policy).

Every model replica reports, through Ray Serve's ``record_autoscaling_stats``, the jobs waiting
for its model in the shared store (:data:`QUEUED`: the same number from every replica) and the
jobs it runs itself (:data:`RUNNING`). The policy asks for enough replicas that each has
``target`` jobs, queued and running together; Ray Serve clips that to the deployment's
``min_replicas``/``max_replicas`` and applies its upscale and downscale delays.

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


def desired_replicas(queued: float, running: float, target: float) -> int:
    """Replicas for ``queued`` waiting and ``running`` running jobs at ``target`` jobs per replica."""
    return math.ceil((queued + running) / target)


class QueueDepthPolicy:
    """A Ray Serve autoscaling policy (a class: Serve makes it once, with ``policy_kwargs``)."""

    def __init__(self, target: float) -> None:
        self.target = target

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        latest = _latest_per_replica(ctx.raw_metrics or {})
        if QUEUED not in latest:  # no replica has reported yet: keep what there is
            return ctx.target_num_replicas, {}
        queued = max(latest[QUEUED].values())  # each replica counts the one shared queue
        running = sum(latest.get(RUNNING, {}).values())
        return desired_replicas(queued, running, self.target), {}


def _latest_per_replica(raw: dict[str, dict[Any, Any]]) -> dict[str, dict[Any, float]]:
    """Each metric's latest value from each replica (raw time series: no look-back averaging)."""
    latest: dict[str, dict[Any, float]] = {}
    for metric, series_by_replica in raw.items():
        values = {replica: series[-1].value for replica, series in series_by_replica.items() if series}
        if values:
            latest[metric] = values
    return latest
