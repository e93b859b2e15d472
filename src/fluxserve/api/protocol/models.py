"""GET /v1/models: OpenAI's model objects, with what each model can do and where it runs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fluxserve.jobs.status import WorkerState


class ModelCapabilities(BaseModel):
    family: str
    min_side: int
    max_side: int
    max_megapixels: float
    size_multiple: int
    max_aspect_ratio: float
    default_size: str
    max_reference_images: int
    default_steps: int
    min_steps: int
    max_steps: int
    guidance: bool
    default_guidance: float | None
    min_guidance: float | None
    max_guidance: float | None
    max_images: int
    safety_tolerance: bool = Field(default=False, description="Whether safety_tolerance (0-5) may be sent.")
    max_prompt_chars: int | None = Field(default=None, description="The longest prompt, where the model limits it.")
    masks: bool = Field(
        default=False, description="Whether the model takes mask (masked edits) and strength (image to image)."
    )
    lora_family: str | None = Field(
        default=None,
        description="The LoRA adapters the model takes: those of this family in GET /v1/loras (flux.2 or flux.1); "
        "null: it takes none (hosted models).",
    )


class ModelRuntimeInfo(BaseModel):
    device: str = Field(description="The device the model runs on, as picked at load (cuda, cuda:1, mps, cpu).")
    dtype: str = Field(description="The transformer's weight dtype.")
    offload: Literal["none", "model", "sequential"]
    quantize_transformer: str = Field(description="none, bnb-8bit, bnb-4bit, torchao-int8, torchao-fp8 or gguf.")
    quantize_text_encoder: str
    step_cache: str = Field(description="The step cache on the transformer, or none.")
    compile: bool = Field(description="Whether the transformer's repeated blocks are compiled.")
    attention: str = Field(description="The attention backend the transformer dispatches to.")
    prompt_cache_mb: float
    memory_bytes: int = Field(description="Parameter and buffer bytes resident on the device after load.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "fluxserve"
    status: WorkerState
    provider: Literal["local", "cloudflare", "bfl"] = Field(
        default="local", description="local: run here by diffusers; otherwise the hosted provider that runs it."
    )
    configured: bool | None = Field(
        default=None, description="Hosted models: whether the server has the provider's credentials."
    )
    capabilities: ModelCapabilities | None = Field(
        None, description="Known once a local model has loaded; always for a hosted one."
    )
    runtime: ModelRuntimeInfo | None = Field(None, description="How a loaded local model runs; none for hosted.")
    aliases: list[str] = Field(
        default_factory=list,
        description="Provider model names (flux-2-dev, flux-2-pro...) that mean this model on the Replicate, "
        "BFL and Workers AI surfaces (setting model_aliases over defaults from what is served).",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
