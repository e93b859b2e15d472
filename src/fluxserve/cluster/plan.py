"""What each deployment asks Ray for, from the settings: plain data, decided before Ray is imported."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fluxserve.engines.hosted.catalog import is_hosted
from fluxserve.errors import InvalidRequest
from fluxserve.settings import Settings


@dataclass(frozen=True)
class ModelDeployment:
    """One served model's Ray Serve deployment."""

    model: str
    name: str
    """The deployment's name in Ray Serve: ``model-`` and the model's name, with any character other
    than a letter, digit, ``.``, ``_`` or ``-`` (a path's ``/``) made ``_``."""
    num_gpus: float
    num_cpus: float


def check_shared_store(settings: Settings) -> None:
    """Replicas in several processes share one queue only in Postgres: refuse the SQLite file."""
    if settings.database_url is None:
        raise InvalidRequest(
            "serve --ray needs a Postgres database_url (--database-url postgresql://...) that every "
            "replica reaches: a SQLite file in data_dir cannot be shared by processes on several machines",
            param="database_url",
        )


def replica_gpus(settings: Settings, model: str, cluster_gpus: float) -> float:
    """GPUs one replica of ``model`` needs: none for a hosted model or ``device = "cpu"``; one for
    ``cuda``; by default (no device set) one where the cluster has GPUs, else none."""
    if is_hosted(model):
        return 0
    device = settings.runtime_for(model)["device"]
    if device is None:
        return 1 if cluster_gpus > 0 else 0
    return 1 if str(device).startswith("cuda") else 0


def deployment_name(model: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9._-]", "_", model)


def model_deployments(settings: Settings, cluster_gpus: float) -> list[ModelDeployment]:
    """One deployment per served model, in the order of ``models``."""
    names = [deployment_name(model) for model in settings.models]
    if len(set(names)) < len(names):
        raise InvalidRequest(f"models {settings.models} give Ray Serve deployments the same name", param="models")
    return [
        ModelDeployment(
            model=model,
            name=name,
            num_gpus=replica_gpus(settings, model, cluster_gpus),
            num_cpus=settings.ray_num_cpus,
        )
        for model, name in zip(settings.models, names, strict=True)
    ]
