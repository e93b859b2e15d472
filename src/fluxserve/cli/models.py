"""``fluxserve models``: the models known by name, their family and what each needs.

With ``--served``: the models the settings serve and the runtime configured for each (before
load only the configured values are known; ``GET /v1/models`` reports what a running server
actually picked and its measured memory).
"""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.table import Table

from fluxserve.engines.catalog import FAMILIES, MODELS
from fluxserve.engines.hosted.catalog import HOSTED, is_hosted
from fluxserve.settings import Settings
from fluxserve.wiring import model_runtime


def model_rows() -> list[dict[str, object]]:
    rows = []
    for spec in MODELS.values():
        caps = FAMILIES[spec.family].limits
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "source": spec.repo_id or "built locally",
                "gated": spec.gated,
                "steps": caps.default_steps,
                "reference_images": caps.max_reference_images,
                "needs": spec.needs,
            }
        )
    credentials = {"cloudflare": "cloudflare_account_id + cloudflare_api_token", "bfl": "bfl_api_key"}
    for hosted in HOSTED.values():
        caps = hosted.capabilities
        rows.append(
            {
                "name": hosted.name,
                "family": caps.family,
                "source": f"{hosted.provider}: {hosted.remote}",
                "gated": False,
                "steps": caps.default_steps or "provider's",
                "reference_images": caps.max_reference_images,
                "needs": f"an account: {credentials[hosted.provider]} (hosted, billed per image)",
            }
        )
    return rows


def print_models(*, as_json: bool) -> None:
    rows = model_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "family", "source", "steps", "refs", "needs")
    for row in rows:
        source = str(row["source"]) + (" (gated)" if row["gated"] else "")
        table.add_row(
            str(row["name"]),
            str(row["family"]),
            source,
            str(row["steps"]),
            str(row["reference_images"]),
            str(row["needs"]),
        )
    Console(width=200).print(table)


def served_rows(settings: Settings) -> list[dict[str, object]]:
    """Each served model and its configured runtime (``None`` for a hosted one: the provider runs it)."""
    return [
        {"name": model, "runtime": None if is_hosted(model) else asdict(model_runtime(settings, model))}
        for model in settings.models
    ]


_RUNTIME_COLUMNS = {
    "device": "device",
    "dtype": "dtype",
    "offload": "offload",
    "quantize_transformer": "transformer",
    "quantize_text_encoder": "text encoder",
    "step_cache": "step cache",
    "compile": "compile",
    "attention": "attention",
    "prompt_cache_mb": "prompt cache MiB",
    "memory_gb": "memory budget GiB",
}


def _cell(field: str, value: object) -> str:
    if value is None:
        return "auto" if field in ("device", "dtype") else "default"
    return "yes" if value is True else "no" if value is False else str(value)


def print_served(settings: Settings, *, as_json: bool) -> None:
    rows = served_rows(settings)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("model", *_RUNTIME_COLUMNS.values(), title="configured runtime (known exactly once loaded)")
    for row in rows:
        runtime = row["runtime"]
        if not isinstance(runtime, dict):
            table.add_row(str(row["name"]), "hosted: the provider runs it")
            continue
        quantized = runtime["quantize_transformer"]
        if quantized == "gguf":
            runtime = {**runtime, "quantize_transformer": f"gguf: {runtime['gguf_file']}"}
        table.add_row(str(row["name"]), *(_cell(field, runtime[field]) for field in _RUNTIME_COLUMNS))
    Console(width=200).print(table)
