"""The hosted models fluxserve can route to, with each provider's real limits.

Names are ``cf:...`` (Cloudflare Workers AI) and ``bfl:...`` (Black Forest Labs). Limits come
from the providers' documentation (summarised in the README's "Hosted models" section, with the
providers' pages: developers.cloudflare.com/workers-ai/models/, docs.bfl.ai); validation reads them,
so a request the provider would refuse is refused here before any money is spent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fluxserve.engines.base import Capabilities

CLOUDFLARE = "cloudflare"
BFL = "bfl"


@dataclass(frozen=True)
class HostedModel:
    name: str
    provider: str
    remote: str
    """The provider's id: a Workers AI model (@cf/...) or a BFL endpoint path (flux-2-pro)."""
    capabilities: Capabilities
    title: str


# Workers AI's FLUX.2 models: width and height 256-1920, references below 512x512, up to 4.
_CF_FLUX2 = Capabilities(
    name="",
    family="flux.2-dev",
    min_side=256,
    max_side=1920,
    max_megapixels=1920 * 1920 / 1024**2,
    size_multiple=16,
    max_aspect_ratio=1920 / 256,
    default_width=1024,
    default_height=768,
    max_reference_images=4,
    reference_max_side=511,
    default_steps=25,
    min_steps=1,
    max_steps=50,
    guidance=True,
    default_guidance=4.0,
    min_guidance=1.0,
    max_guidance=10.0,
    max_images=4,
)
_CF_KLEIN = replace(
    _CF_FLUX2,
    family="flux.2-klein",
    default_steps=4,
    min_steps=4,
    max_steps=4,
    guidance=False,
    default_guidance=None,
)
# FLUX.1 [schnell] on Workers AI takes a prompt, steps (up to 8) and a seed: no size, no references.
_CF_SCHNELL = Capabilities(
    name="",
    family="flux.1-schnell",
    min_side=1024,
    max_side=1024,
    max_megapixels=1.0,
    size_multiple=16,
    max_aspect_ratio=1.0,
    default_width=1024,
    default_height=1024,
    max_reference_images=0,
    max_prompt_chars=2048,
    default_steps=4,
    min_steps=1,
    max_steps=8,
    guidance=False,
    default_guidance=None,
    max_images=4,
)
# BFL: width and height >= 64, multiples of 16, up to 4 megapixels out; pro, max and flex take 8
# references, klein 4. pro, max and klein choose their own steps (0 here: not the client's to set).
# Every BFL endpoint takes safety_tolerance (0-5, default 2).
_BFL_FLUX2 = Capabilities(
    name="",
    family="flux.2-pro",
    min_side=64,
    max_side=4096,
    max_megapixels=4.0,
    size_multiple=16,
    max_aspect_ratio=4096 / 1024,
    default_width=1024,
    default_height=1024,
    max_reference_images=8,
    reference_max_megapixels=1.0,
    default_steps=0,
    min_steps=0,
    max_steps=0,
    guidance=False,
    default_guidance=None,
    max_images=4,
    safety_tolerance=True,
)
_BFL_FLEX = replace(
    _BFL_FLUX2,
    family="flux.2-flex",
    default_steps=50,
    min_steps=1,
    max_steps=50,
    guidance=True,
    default_guidance=4.5,
    min_guidance=1.5,
    max_guidance=10.0,
)
_BFL_KLEIN = replace(_BFL_FLUX2, family="flux.2-klein", max_reference_images=4)


def _model(name: str, provider: str, remote: str, caps: Capabilities, title: str) -> HostedModel:
    return HostedModel(name, provider, remote, replace(caps, name=name), title)


HOSTED: dict[str, HostedModel] = {
    m.name: m
    for m in (
        _model(
            "cf:flux-2-dev", CLOUDFLARE, "@cf/black-forest-labs/flux-2-dev", _CF_FLUX2, "FLUX.2 [dev] on Workers AI"
        ),
        _model(
            "cf:flux-2-klein-4b", CLOUDFLARE, "@cf/black-forest-labs/flux-2-klein-4b", _CF_KLEIN, "FLUX.2 [klein] 4B"
        ),
        _model(
            "cf:flux-2-klein-9b", CLOUDFLARE, "@cf/black-forest-labs/flux-2-klein-9b", _CF_KLEIN, "FLUX.2 [klein] 9B"
        ),
        _model(
            "cf:flux-1-schnell",
            CLOUDFLARE,
            "@cf/black-forest-labs/flux-1-schnell",
            _CF_SCHNELL,
            "FLUX.1 [schnell] on Workers AI",
        ),
        _model("bfl:flux-2-pro", BFL, "flux-2-pro", _BFL_FLUX2, "FLUX.2 [pro] by BFL"),
        _model("bfl:flux-2-max", BFL, "flux-2-max", replace(_BFL_FLUX2, family="flux.2-max"), "FLUX.2 [max] by BFL"),
        _model("bfl:flux-2-flex", BFL, "flux-2-flex", _BFL_FLEX, "FLUX.2 [flex] by BFL"),
        _model("bfl:flux-2-klein-4b", BFL, "flux-2-klein-4b", _BFL_KLEIN, "FLUX.2 [klein] 4B by BFL"),
        _model("bfl:flux-2-klein-9b", BFL, "flux-2-klein-9b", _BFL_KLEIN, "FLUX.2 [klein] 9B by BFL"),
    )
}


def is_hosted(name: str) -> bool:
    return name.split(":", 1)[0] in ("cf", "bfl") and ":" in name
