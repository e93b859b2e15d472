"""Provider model names (``flux-2-dev``, ``flux-2-pro``...) mapped to the models this server serves.

Clients of Replicate, BFL and Workers AI name models the way those providers do. Each of those API
surfaces strips its own prefix (``black-forest-labs/``, ``@cf/black-forest-labs/``) and looks the
bare name up here. The operator's ``model_aliases`` setting wins; every provider name it leaves out
gets a default from what is served: the same weights where served (locally first, then hosted),
else the nearest served model of the same generation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fluxserve.engines.catalog import MODELS
from fluxserve.engines.hosted.catalog import HOSTED

PROVIDER_MODELS: dict[str, tuple[str, ...]] = {
    "flux-2-pro": ("bfl:flux-2-pro", "flux.2-dev", "cf:flux-2-dev"),
    "flux-2-max": ("bfl:flux-2-max", "bfl:flux-2-pro", "flux.2-dev", "cf:flux-2-dev"),
    "flux-2-flex": ("bfl:flux-2-flex", "flux.2-dev", "cf:flux-2-dev"),
    "flux-2-dev": ("flux.2-dev", "cf:flux-2-dev"),
    "flux-2-klein-4b": ("flux.2-klein-4b", "cf:flux-2-klein-4b", "bfl:flux-2-klein-4b"),
    "flux-2-klein-9b": ("flux.2-klein-9b", "cf:flux-2-klein-9b", "bfl:flux-2-klein-9b"),
    "flux-schnell": ("flux.1-schnell", "cf:flux-1-schnell"),
    "flux-1-schnell": ("flux.1-schnell", "cf:flux-1-schnell"),
    "flux-dev": ("flux.1-dev",),
    "flux-1-dev": ("flux.1-dev",),
}
"""Each provider name with the models that run the same weights, best first."""


def generation_of(model: str) -> str | None:
    """``flux.2`` or ``flux.1`` for a model fluxserve knows by name; None for a repository id."""
    if model in HOSTED:
        family = HOSTED[model].capabilities.family
    elif model in MODELS:
        family = MODELS[model].family
    else:
        return None
    return family.split("-", 1)[0]


def default_aliases(served: Iterable[str]) -> dict[str, str]:
    """An alias for every provider name that some served model can answer."""
    served = list(served)
    aliases: dict[str, str] = {}
    for name, same_weights in PROVIDER_MODELS.items():
        exact = next((model for model in same_weights if model in served), None)
        if exact is not None:
            aliases[name] = exact
            continue
        generation = "flux.2" if name.startswith("flux-2") else "flux.1"
        nearest = next((model for model in served if generation_of(model) == generation), None)
        if nearest is not None:
            aliases[name] = nearest
    return aliases


def alias_table(served: Iterable[str], configured: Mapping[str, str]) -> dict[str, str]:
    """The defaults with the operator's entries on top."""
    return {**default_aliases(served), **configured}


def resolve(model: str, aliases: Mapping[str, str], served: Iterable[str]) -> str | None:
    """The served model a client's name means: itself when served, else its alias; None if neither."""
    if model in served:
        return model
    return aliases.get(model)
