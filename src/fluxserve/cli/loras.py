"""``fluxserve loras``: the LoRA adapters a server's lora_dir holds and the family each is for."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from fluxserve.engines.loras import LoraCatalog
from fluxserve.settings import Settings
from fluxserve.wiring import lora_options


def lora_rows(settings: Settings) -> list[dict[str, object]]:
    return [
        {"name": found.name, "family": found.family, "bytes": found.size}
        for found in LoraCatalog(lora_options(settings)).available()
    ]


def print_loras(settings: Settings, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(lora_rows(settings), indent=2))
        return
    if settings.lora_dir is None:
        typer.echo("no lora_dir is set (--lora-dir, FLUXSERVE_LORA_DIR or lora_dir in the config file)")
        return
    table = Table("name", "family", "MB", title=f"LoRA adapters in {settings.lora_dir}")
    for found in LoraCatalog(lora_options(settings)).available():
        table.add_row(found.name, found.family or "unknown", f"{found.size / 2**20:.1f}")
    Console().print(table)
