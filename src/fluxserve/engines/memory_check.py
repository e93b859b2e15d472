"""Plan a named model's memory, and refuse at load a model that cannot fit its GPU.

The configs come from the model's folder when it is here (a local folder, a tiny model, or a
Hugging Face snapshot already in the cache); otherwise, for the models fluxserve knows by
name, from the copies of their published configs shipped in ``engines/configs`` (configs
only, never weights), so that ``fluxserve plan`` answers before anything is downloaded.

At load, a model whose plan does not fit the device's free memory is refused with the plan's
advice (:class:`~fluxserve.errors.ModelUnavailable`) instead of running out of memory on the
first request. That is checked on CUDA devices, and on any device where
``ModelRuntime.memory_gb`` sets a budget; a CPU or MPS device without a budget is not checked
at load (the operating system swaps rather than failing; ``fluxserve plan`` still compares
with the available RAM on request).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from fluxserve.engines.catalog import MODELS
from fluxserve.engines.loading import EngineOptions, import_diffusers, locate_model, pick_device
from fluxserve.engines.memory_plan import GB, MemoryPlan, make_plan, plan_inputs
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.errors import ModelUnavailable

log = logging.getLogger("fluxserve.engines.memory")

SHIPPED_CONFIGS = {
    "flux.2-klein-4b": "flux.2-klein-4b",
    "flux.2-klein-base-4b": "flux.2-klein-4b",
    "flux.2-klein-9b": "flux.2-klein-9b",
    "flux.2-klein-base-9b": "flux.2-klein-9b",
    "flux.2-dev": "flux.2-dev",
    "flux.1-dev": "flux.1-dev",
    "flux.1-schnell": "flux.1-schnell",
}
"""Catalog names and the folder of published configs each plans from (the klein base models
have the same components as the distilled ones)."""


def shipped_configs(name: str) -> Path | None:
    folder = SHIPPED_CONFIGS.get(name)
    if folder is None:
        return None
    return Path(str(resources.files("fluxserve.engines") / "configs" / folder))


def _cached_snapshot(repo_id: str) -> Path | None:
    """A snapshot of ``repo_id`` in the Hugging Face cache holding its configs; never downloads."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "model_index.json")
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if (folder / "transformer" / "config.json").is_file() else None


def find_configs(name: str, options: EngineOptions) -> tuple[Path, str]:
    """The folder of ``name``'s component configs and a phrase saying where it is."""
    spec = MODELS.get(name)
    repo_id = spec.repo_id if spec is not None else None
    by_repo = next((n for n, s in MODELS.items() if s.repo_id == name), None)
    if spec is None and by_repo is not None:
        name, repo_id = by_repo, name
    if repo_id is not None:
        cached = _cached_snapshot(repo_id)
        if cached is not None:
            return cached, f"the Hugging Face cache ({repo_id})"
        shipped = shipped_configs(name)
        if shipped is not None:
            return shipped, f"fluxserve's copy of the published configs of {repo_id}"
    location = locate_model(name, EngineOptions(options.cache_dir, allow_download=False, runtime=options.runtime))
    return location.path, str(location.path)


def available_memory(device: str) -> tuple[int | None, str]:
    """Bytes free for a model on ``device`` now, and how that was measured."""
    if device.startswith("cuda"):
        torch, _ = import_diffusers()
        free, total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free on {device} of {total / GB:.1f} GiB (torch.cuda.mem_get_info)"
    if device == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available RAM (MemAvailable in /proc/meminfo)"
        except OSError:
            pass
    return None, f"not measured on {device}"


def resolve_dtype(device: str, requested: str | None) -> str:
    return requested or ("float32" if device == "cpu" else "bfloat16")


def plan_model(
    name: str,
    runtime: ModelRuntime,
    options: EngineOptions,
    *,
    folder: Path | None = None,
    width: int = 1024,
    height: int = 1024,
) -> MemoryPlan:
    """The memory plan of model ``name`` under ``runtime``, against the budget or the device's free memory."""
    source = str(folder)
    if folder is None:
        folder, source = find_configs(name, options)
    torch, _ = import_diffusers()
    device = pick_device(runtime.device, torch)
    if runtime.memory_gb is not None:
        available: int | None = int(runtime.memory_gb * GB)
        measured = "the memory budget given"
    else:
        available, measured = available_memory(device)
    inputs = plan_inputs(name, folder, source, runtime.gguf_file)
    dtype = resolve_dtype(device, runtime.dtype)
    return make_plan(
        inputs,
        runtime,
        device=device,
        dtype=dtype,
        available=available,
        available_source=measured,
        width=width,
        height=height,
    )


def check_fits(name: str, folder: Path, options: EngineOptions) -> MemoryPlan | None:
    """Before loading: refuse a model that cannot fit (see the module's docstring); return the plan."""
    runtime = options.runtime
    torch, _ = import_diffusers()
    device = pick_device(runtime.device, torch)
    if not device.startswith("cuda") and runtime.memory_gb is None:
        return None  # RAM and unified memory: the operating system swaps rather than failing
    try:
        plan = plan_model(name, runtime, options, folder=folder)
    except ModelUnavailable as error:
        log.warning("no memory plan for %s: %s", name, error)
        return None
    if plan.verdict == "does not fit":
        raise ModelUnavailable(f"not loading {plan.advice()}")
    if plan.verdict in ("does not fit", "tight"):
        log.warning("%s", plan.advice())
    else:
        log.info("%s", plan.advice())
    return plan
