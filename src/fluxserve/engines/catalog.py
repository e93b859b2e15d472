"""The FLUX model families and the models fluxserve knows by short name.

A family fixes how a pipeline is called and what it accepts (steps, guidance, references,
sizes). A model is a name for a set of weights: a Hugging Face repository or a tiny
random-weight pipeline built locally.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fluxserve.engines.base import Capabilities


@dataclass(frozen=True)
class Family:
    key: str
    title: str
    pipeline_class: str
    limits: Capabilities
    max_sequence_length: int = 512
    inpaint_pipeline_class: str | None = None
    """The diffusers pipeline that runs masked and strength edits from the same components, if any."""

    def capabilities(self, model_name: str) -> Capabilities:
        return replace(self.limits, name=model_name)


_FLUX2 = Capabilities(
    name="", family="", max_megapixels=4.0, max_side=4096, reference_max_megapixels=1.0, lora_family="flux.2"
)
_FLUX1 = Capabilities(
    name="", family="", max_megapixels=2.0, max_side=2048, max_reference_images=0, masks=True, lora_family="flux.1"
)

FAMILIES: dict[str, Family] = {
    f.key: f
    for f in (
        Family(
            "flux.2-klein",
            "FLUX.2 [klein], step-distilled",
            "Flux2KleinPipeline",
            replace(
                _FLUX2,
                family="flux.2-klein",
                max_reference_images=4,
                masks=True,
                default_steps=4,
                min_steps=4,
                max_steps=4,
                guidance=False,
                default_guidance=None,
            ),
            inpaint_pipeline_class="Flux2KleinInpaintPipeline",
        ),
        Family(
            "flux.2-klein-base",
            "FLUX.2 [klein] base",
            "Flux2KleinPipeline",
            replace(
                _FLUX2,
                family="flux.2-klein-base",
                max_reference_images=4,
                masks=True,
                default_steps=50,
                default_guidance=4.0,
            ),
            inpaint_pipeline_class="Flux2KleinInpaintPipeline",
        ),
        Family(
            "flux.2-dev",
            "FLUX.2 [dev], guidance-distilled",
            "Flux2Pipeline",
            replace(_FLUX2, family="flux.2-dev", max_reference_images=6, default_steps=28, default_guidance=4.0),
        ),
        Family(
            "flux.1-dev",
            "FLUX.1 [dev], guidance-distilled",
            "FluxPipeline",
            replace(_FLUX1, family="flux.1-dev", default_steps=28, default_guidance=3.5),
            inpaint_pipeline_class="FluxInpaintPipeline",
        ),
        Family(
            "flux.1-schnell",
            "FLUX.1 [schnell], step-distilled",
            "FluxPipeline",
            replace(
                _FLUX1,
                family="flux.1-schnell",
                default_steps=4,
                min_steps=1,
                max_steps=8,
                guidance=False,
                default_guidance=None,
            ),
            max_sequence_length=256,
            inpaint_pipeline_class="FluxInpaintPipeline",
        ),
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """A model known by short name."""

    name: str
    family: str
    source: str
    """A Hugging Face repository id, or ``tiny:<name>`` for a locally built tiny pipeline."""
    needs: str
    gated: bool = False

    @property
    def is_tiny(self) -> bool:
        return self.source.startswith("tiny:")

    @property
    def repo_id(self) -> str | None:
        return None if self.is_tiny else self.source


_TINY_NEEDS = "nothing: built offline on first use (a few MB, random weights, makes noise)"

MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            "flux.2-klein-4b",
            "flux.2-klein",
            "black-forest-labs/FLUX.2-klein-4B",
            "a GPU with about 13 GB (bf16); Apache-2.0",
        ),
        ModelSpec(
            "flux.2-klein-9b",
            "flux.2-klein",
            "black-forest-labs/FLUX.2-klein-9B",
            "a GPU with about 29 GB (bf16); non-commercial licence",
            gated=True,
        ),
        ModelSpec(
            "flux.2-klein-base-4b",
            "flux.2-klein-base",
            "black-forest-labs/FLUX.2-klein-base-4B",
            "a GPU with about 13 GB (bf16); Apache-2.0",
        ),
        ModelSpec(
            "flux.2-klein-base-9b",
            "flux.2-klein-base",
            "black-forest-labs/FLUX.2-klein-base-9B",
            "a GPU with about 29 GB (bf16); non-commercial licence",
            gated=True,
        ),
        ModelSpec(
            "flux.2-dev",
            "flux.2-dev",
            "black-forest-labs/FLUX.2-dev",
            "an 80 GB GPU, or about 62 GB with --offload model; non-commercial licence",
            gated=True,
        ),
        ModelSpec(
            "flux.1-schnell",
            "flux.1-schnell",
            "black-forest-labs/FLUX.1-schnell",
            "a GPU with about 33 GB (bf16), less with --offload; Apache-2.0",
        ),
        ModelSpec(
            "flux.1-dev",
            "flux.1-dev",
            "black-forest-labs/FLUX.1-dev",
            "a GPU with about 33 GB (bf16), less with --offload; non-commercial licence",
            gated=True,
        ),
        ModelSpec("tiny-random", "flux.2-klein", "tiny:tiny-random", _TINY_NEEDS),
        ModelSpec("tiny-random-base", "flux.2-klein-base", "tiny:tiny-random-base", _TINY_NEEDS),
        ModelSpec("tiny-random-dev", "flux.2-dev", "tiny:tiny-random-dev", _TINY_NEEDS),
        ModelSpec("tiny-random-flux1", "flux.1-dev", "tiny:tiny-random-flux1", _TINY_NEEDS),
        ModelSpec("tiny-random-schnell", "flux.1-schnell", "tiny:tiny-random-schnell", _TINY_NEEDS),
    )
}


def family_of_pipeline(class_name: str, *, is_distilled: bool, guidance_embeds: bool) -> Family:
    """The family a loaded pipeline belongs to, from its class and its configuration."""
    if class_name == "Flux2KleinPipeline":
        return FAMILIES["flux.2-klein" if is_distilled else "flux.2-klein-base"]
    if class_name == "Flux2Pipeline":
        return FAMILIES["flux.2-dev"]
    if class_name == "FluxPipeline":
        return FAMILIES["flux.1-dev" if guidance_embeds else "flux.1-schnell"]
    raise KeyError(class_name)


SUPPORTED_PIPELINES = frozenset(f.pipeline_class for f in FAMILIES.values())
