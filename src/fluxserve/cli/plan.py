"""``fluxserve plan``: will a model fit this GPU (or a GPU of N GB), and which options would make it fit.

Its runtime flags are ``generate``'s and ``serve``'s (``cli/runtime_flags.py``), checked the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import typer

from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.memory_check import plan_model
from fluxserve.engines.memory_plan import render
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.engines.validation import parse_size


@dataclass(frozen=True)
class PlanArgs:
    model: str
    runtime: ModelRuntime
    size: str
    as_json: bool
    cache_dir: Path


def planned_runtime(runtime: ModelRuntime) -> ModelRuntime:
    """A memory budget with no device plans for a card of that size, whatever this machine has."""
    if runtime.device is None and runtime.memory_gb is not None:
        return replace(runtime, device="cuda")
    return runtime


def run_plan(args: PlanArgs) -> None:
    runtime = planned_runtime(args.runtime)
    width, height = parse_size(args.size) or (1024, 1024)
    options = EngineOptions(cache_dir=args.cache_dir, allow_download=False, runtime=runtime)
    plan = plan_model(args.model, runtime, options, width=width, height=height)
    if args.as_json:
        typer.echo(json.dumps(plan.to_json(), indent=2))
    else:
        typer.echo(render(plan))
