"""The local engine: FLUX.2 [klein], FLUX.2 [dev] and FLUX.1 through Hugging Face diffusers.

Images of one request are generated one after another, each from its own seed, with the same
call as a request for that image alone: so every image reproduces byte for byte from its
reported seed. (Batching several images into one call is barely faster on a busy GPU and
changes the pixels slightly.)

Masked edits and edits with ``strength`` (image to image) run the family's inpainting pipeline
(``Flux2KleinInpaintPipeline`` for klein, ``FluxInpaintPipeline`` for FLUX.1), built once from the
loaded pipeline's own modules with ``from_pipe``: no weights are loaded or copied twice. Outside
the mask the result keeps the input's exact pixels (the pipeline itself keeps only their latents,
which its VAE does not give back exactly).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from PIL import Image

from fluxserve.engines.adapters import Adapters, LoadedAdapters, SlotAdapters
from fluxserve.engines.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    Progress,
    ProgressCallback,
    ResolvedRequest,
    warm_up_request,
)
from fluxserve.engines.catalog import Family, family_of_pipeline
from fluxserve.engines.effective import describe, resident_bytes
from fluxserve.engines.loading import EngineOptions, import_diffusers, load_pipeline, locate_model
from fluxserve.engines.loras import LoraCatalog, lora_family
from fluxserve.engines.memory_check import check_fits
from fluxserve.engines.prompt_cache import EmbeddingCache, PromptEmbedder, reuse_reference_latents
from fluxserve.engines.quantize import AppliedQuantization, applied_quantization
from fluxserve.engines.runtime import EffectiveRuntime
from fluxserve.engines.speed import CacheTuning, CalibrationCall, Speedups, apply_speed_options
from fluxserve.engines.validation import denoising_steps, seed_for_image, validate
from fluxserve.errors import EngineNotReady, GenerationCancelled, GenerationError
from fluxserve.imaging.masks import CHANGE, keep_unmasked
from fluxserve.imaging.preview import preview_from_tokens

_LOADING = threading.Lock()
"""One model loads (or builds) at a time in a process: ``from_pretrained`` swaps torch's module
initialisation for meta-device stubs while it runs (accelerate's ``init_empty_weights``), so a
model built or loaded on another thread meanwhile gets meta tensors ("Cannot copy out of meta
tensor"). The lock is global because that patch is."""


class _StopRequested(Exception):
    """Raised inside the pipeline's step callback to abandon a run."""


class DiffusersEngine:
    """One local model. Thread-safe: concurrent ``generate`` calls run one at a time."""

    def __init__(self, model: str, options: EngineOptions, *, cache_tuning: CacheTuning | None = None) -> None:
        self.model = model
        self.options = options
        self.cache_tuning = cache_tuning
        """How eagerly the step cache skips (None: diffusers' defaults)."""
        self._pipeline: Any = None
        self._image_to_image: Any = None
        """The inpainting pipeline over ``_pipeline``'s modules, built at the first masked edit."""
        self._speedups: Speedups | None = None
        self._prompts: PromptEmbedder | None = None
        self._adapters: Adapters | None = None
        self._family: Family | None = None
        self._device = "cpu"
        self._memory_bytes = 0
        self._lock = threading.Lock()

    @property
    def family(self) -> Family:
        if self._family is None:
            raise EngineNotReady(f"model {self.model!r} is not loaded yet")
        return self._family

    @property
    def capabilities(self) -> Capabilities:
        return self.family.capabilities(self.model)

    @property
    def concurrency(self) -> int:
        return 1  # one pipeline computes one request at a time

    @property
    def device(self) -> str:
        return self._device

    @property
    def runtime(self) -> EffectiveRuntime | None:
        """How the loaded model runs (read from the pipeline, memory as measured at load); None before."""
        pipeline = self._pipeline
        if pipeline is None:
            return None
        caching = self._speedups is not None and self._speedups.step_cache
        return describe(pipeline, self._device, self.options.runtime, self._memory_bytes, step_cache=caching)

    @property
    def provider(self) -> str:
        return "local"

    @property
    def remote(self) -> bool:
        return False

    def configured(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._pipeline = self._image_to_image = self._speedups = self._prompts = self._adapters = None

    def load(self) -> None:
        with self._lock, _LOADING:
            if self._pipeline is not None:
                return
            location = locate_model(self.model, self.options)
            check_fits(self.model, location.path, self.options)
            pipeline, device = load_pipeline(location, self.options)
            self._family = family_of_pipeline(
                type(pipeline).__name__,
                is_distilled=bool(getattr(pipeline.config, "is_distilled", False)),
                guidance_embeds=bool(pipeline.transformer.config.guidance_embeds),
            )
            self._memory_bytes = resident_bytes(pipeline, device)
            self._speedups = self._apply_speed_options(pipeline)
            cache_bytes = int(self.options.runtime.prompt_cache_mb * 2**20)
            self._prompts = PromptEmbedder(pipeline, EmbeddingCache(cache_bytes)) if cache_bytes > 0 else None
            # With compile on, adapters are hot-swapped into fixed slots so that switching never recompiles.
            holder = SlotAdapters if self.options.runtime.compile else LoadedAdapters
            self._adapters = holder(
                pipeline, LoraCatalog(self.options.loras), lora_family(self._family.key), self.model
            )
            self._pipeline, self._device = pipeline, device
        if self.options.runtime.compile:
            self._warm_up_compile()

    def _apply_speed_options(self, pipeline: Any) -> Speedups:
        limits = self.family.limits
        calibration = CalibrationCall(steps=limits.default_steps, guidance_scale=limits.default_guidance or 1.0)
        return apply_speed_options(pipeline, self.model, self.options.runtime, calibration, self.cache_tuning)

    def _warm_up_compile(self) -> None:
        """Compile the transformer's blocks now (the first call compiles), so readiness waits for it."""
        self.generate(warm_up_request(self.capabilities))

    @property
    def adapters(self) -> Adapters:
        """The LoRA adapters the loaded pipeline holds."""
        if self._adapters is None:
            raise EngineNotReady(f"model {self.model!r} is not loaded yet")
        return self._adapters

    def quantization(self) -> dict[str, AppliedQuantization]:
        """Each component of the loaded pipeline and the quantization it holds."""
        if self._pipeline is None:
            raise EngineNotReady(f"model {self.model!r} is not loaded yet")
        return applied_quantization(self._pipeline)

    def generate(
        self,
        request: GenerationRequest | ResolvedRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        resolved = validate(request, self.capabilities)
        started = time.perf_counter()
        images: list[GeneratedImage] = []
        with self._lock, self._reference_latents_once(resolved):
            encoder_changed = self.adapters.activate(resolved.loras)
            for index in range(resolved.n):
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled()
                seed = seed_for_image(resolved.seed, index)
                image_started = time.perf_counter()
                callback = self._step_callback(resolved, index, progress, cancel)
                image = self._run(resolved, seed, callback, cached_prompts=not encoder_changed)
                images.append(GeneratedImage(image, seed, time.perf_counter() - image_started))
        return GenerationResult(
            images=images,
            model=self.model,
            prompt=resolved.prompt,
            reference_images=len(resolved.references),
            width=resolved.width,
            height=resolved.height,
            steps=resolved.steps,
            guidance=resolved.guidance,
            total_seconds=time.perf_counter() - started,
            mask=resolved.mask is not None,
            strength=resolved.strength,
            loras=resolved.loras,
        )

    def _reference_latents_once(self, request: ResolvedRequest) -> Any:
        if self._prompts is None or not request.references or request.n == 1 or request.strength is not None:
            return contextlib.nullcontext()
        return reuse_reference_latents(self._pipeline)

    def _step_callback(
        self,
        request: ResolvedRequest,
        index: int,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Any:
        steps = denoising_steps(request.steps, request.strength) or 1
        family = self.family.key
        width, height = request.width, request.height

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if cancel is not None and cancel.is_set():
                raise _StopRequested()
            if progress is not None:
                latents = tensors["latents"]

                def preview() -> Image.Image:
                    # Reads batch item 0 (each call generates one image); copies, never writes.
                    return preview_from_tokens(
                        latents[0],
                        family=family,
                        width=width,
                        height=height,
                        vae_scale_factor=pipeline.vae_scale_factor,
                    )

                progress(Progress(index * steps + step + 1, request.n * steps, index, request.n, preview=preview))
            return {}

        return on_step_end

    def pipeline_arguments(self, request: GenerationRequest | ResolvedRequest, seed: int) -> dict[str, Any]:
        """The exact keyword arguments this engine passes to the diffusers pipeline."""
        torch, _ = import_diffusers()
        family = self.family
        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "width": request.width,
            "height": request.height,
            "num_inference_steps": request.steps,
            # A CPU generator draws the same noise on every device.
            "generator": torch.Generator(device="cpu").manual_seed(seed),
        }
        if request.references and request.strength is not None:  # image to image: the first is the start
            arguments["image"] = request.references[0]
            if len(request.references) > 1:
                arguments["image_reference"] = list(request.references[1:])
            full = Image.new("L", request.references[0].size, CHANGE)
            arguments["mask_image"] = full if request.mask is None else request.mask
            arguments["strength"] = request.strength
        elif request.references:
            arguments["image"] = list(request.references)
        if family.key == "flux.2-klein":
            arguments["guidance_scale"] = 1.0  # ignored by the distilled model; above 1 it warns
        elif request.guidance is not None:
            arguments["guidance_scale"] = request.guidance
        if family.key.startswith("flux.1"):
            arguments["max_sequence_length"] = family.max_sequence_length
        return arguments

    def image_to_image_pipeline(self) -> Any:
        """The family's inpainting pipeline over the loaded pipeline's modules (built once, nothing copied).

        It gets its own scheduler (a few numbers, no weights): schedulers keep per-call state.
        """
        if self._image_to_image is None:
            class_name = self.family.inpaint_pipeline_class
            if class_name is None or self._pipeline is None:
                raise EngineNotReady(f"model {self.model!r} has no masked editing")
            _, diffusers = import_diffusers()
            scheduler = type(self._pipeline.scheduler).from_config(self._pipeline.scheduler.config)
            pipeline = getattr(diffusers, class_name).from_pipe(self._pipeline, scheduler=scheduler)
            pipeline.set_progress_bar_config(disable=True)
            self._image_to_image = pipeline
        return self._image_to_image

    def _run(self, request: ResolvedRequest, seed: int, callback: Any, *, cached_prompts: bool = True) -> Any:
        if request.strength is not None:
            first = request.references[0]
            if denoising_steps(request.steps, request.strength) == 0:  # nothing may move: no step runs
                return first.copy()
            pipeline = self.image_to_image_pipeline()
            generated = self._call(pipeline, request, seed, callback, cached_prompts=cached_prompts)
            return generated if request.mask is None else keep_unmasked(generated, first, request.mask)
        return self._call(self._pipeline, request, seed, callback, cached_prompts=cached_prompts)

    def _call(self, pipeline: Any, request: ResolvedRequest, seed: int, callback: Any, *, cached_prompts: bool) -> Any:
        torch, _ = import_diffusers()
        arguments = self.pipeline_arguments(request, seed)
        if self._prompts is not None and cached_prompts:  # not while an adapter changes the text encoder
            arguments = self._prompts.replace_prompt(arguments)
        steps = denoising_steps(request.steps, request.strength)
        speedups = self._speedups.run(steps, pipeline) if self._speedups is not None else contextlib.nullcontext()
        try:
            with speedups:
                output = pipeline(**arguments, callback_on_step_end=callback)
        except _StopRequested:
            raise GenerationCancelled() from None
        except torch.OutOfMemoryError:
            raise GenerationError(
                f"out of memory on {self._device} at {request.width}x{request.height}; "
                "try a smaller size or --offload model"
            ) from None
        return output.images[0]
