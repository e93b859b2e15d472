"""Replicate's model versions: one stable id per served model, and the model and version bodies.

A served model's version id is the SHA-256 (hex) of what defines its outputs: its name, its provider,
where its weights come from (the catalog's repository, or the name) and, for a local model, the runtime
fields that change the numbers (device, dtype, quantizations, GGUF file, step cache). The same
configuration gives the same id after every restart; changing any of those gives a new one. Settings
that change only speed or memory (offload, compile, attention, caches) keep the id. A new revision of
the weights on the hub under the same repository does not change it: fluxserve does not pin revisions.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fluxserve import __version__
from fluxserve.api.deps import Services
from fluxserve.api.protocol.replicate import FluxInput, ModelObject, VersionObject, VersionPage
from fluxserve.api.serving import served_model
from fluxserve.engines.catalog import MODELS
from fluxserve.errors import InvalidVersion, UnknownModel, UnknownVersion

VERSION_ID = re.compile(r"[0-9a-f]{64}")
DEFINING_RUNTIME = ("device", "dtype", "quantize_transformer", "quantize_text_encoder", "gguf_file", "step_cache")
"""The runtime fields that change what a local model computes (and so its version)."""


def version_id(model: str, services: Services) -> str:
    """The version id of the served model ``model``."""
    engine = services.jobs.worker(model).engine
    spec = MODELS.get(model)
    runtime = services.settings.runtime_for(model)
    defining: dict[str, Any] = {
        "model": model,
        "provider": engine.provider,
        "source": model if spec is None else spec.source,
        "runtime": {} if engine.remote else {name: runtime.get(name) for name in DEFINING_RUNTIME},
    }
    text = json.dumps(defining, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Reference:
    """What a prediction names: the served model, and the version id it pinned (None: it named the model)."""

    model: str
    version: str | None = None


def model_of_version(version: str, services: Services) -> str:
    """The served model whose version id is ``version``; InvalidVersion for any other id."""
    for model in services.jobs.workers:
        if version_id(model, services) == version:
            return model
    raise InvalidVersion(f"version {version!r} is not served here (or was, with another configuration)")


def reference(ref: str, services: Services) -> Reference:
    """A prediction's Replicate model reference -> the served model and the version it pins.

    ``<version id>``; ``owner/name`` or a bare name (the owner is dropped, the name goes through the
    alias table; a served model's own name works too, ``bfl:flux-2-pro`` included); ``owner/name:<id>``,
    whose id must be that model's version (InvalidVersion otherwise: a 422, as on Replicate). An unknown
    name is UnknownModel.
    """
    if VERSION_ID.fullmatch(ref):
        return Reference(model_of_version(ref, services), ref)
    whole = _served(ref, services)
    if whole is not None:
        return Reference(whole)
    named, colon, version = ref.rpartition(":") if ":" in ref else (ref, "", "")
    model = named_model(named, services)
    if not colon:
        return Reference(model)
    served = version_id(model, services)
    if version != served:
        raise InvalidVersion(f"version {version!r} of {named} is not served here; its version is {served}")
    return Reference(model, version)


def named_model(named: str, services: Services) -> str:
    """The served model ``owner/name`` (or a bare name) means; UnknownModel if none."""
    model = _served(named, services)
    if model is None:
        served = ", ".join(services.jobs.workers)
        raise UnknownModel(f"model {named!r} is not served here; available: {served} (or their aliases)")
    return model


def _served(named: str, services: Services) -> str | None:
    return served_model(named.rsplit("/", 1)[-1], services) or served_model(named, services)


def served_version(owner: str, name: str, version: str, services: Services) -> str:
    """The served model of GET /v1/models/{owner}/{name}/versions/{version}; a 404 unless it is its version."""
    model = named_model(f"{owner}/{name}", services)
    served = version_id(model, services)
    if version != served:
        raise UnknownVersion(f"version {version!r} of {owner}/{name} is not served here; its version is {served}")
    return model


def version_object(model: str, services: Services) -> VersionObject:
    """Replicate's version body. fluxserve runs no Cog: ``cog_version`` says so; ``openapi_schema``
    describes the input (:class:`FluxInput`) and the output (a URL), as the official client reads it."""
    schema = {
        "openapi": "3.1.0",
        "info": {"title": model, "version": __version__},
        "paths": {},
        "components": {
            "schemas": {
                "Input": FluxInput.model_json_schema(),
                "Output": {"title": "Output", "type": "string", "format": "uri"},
            }
        },
    }
    created = datetime.fromtimestamp(services.started, UTC).isoformat().replace("+00:00", "Z")
    return VersionObject(
        id=version_id(model, services),
        created_at=created,
        cog_version=f"none (fluxserve {__version__})",
        openapi_schema=schema,
    )


def model_object(owner: str, name: str, base_url: str, services: Services) -> ModelObject:
    """Replicate's model body for ``owner/name`` (an alias or a served model's name)."""
    model = named_model(f"{owner}/{name}", services)
    return ModelObject(
        url=f"{base_url}/v1/models/{owner}/{name}",
        owner=owner,
        name=name,
        description=f"{owner}/{name}, served here by {model}",
        latest_version=version_object(model, services),
    )


def version_page(owner: str, name: str, services: Services) -> VersionPage:
    return VersionPage(results=[version_object(named_model(f"{owner}/{name}", services), services)])
