"""``fluxserve models``: the models known by name, their family and what each needs."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from fluxserve.engines.catalog import FAMILIES, MODELS
from fluxserve.engines.hosted.catalog import HOSTED


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
