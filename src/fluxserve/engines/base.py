"""The engine seam: what every back end (local diffusers pipelines, hosted providers) provides.

An engine is three things: ``capabilities`` (what it accepts), ``load()`` (get ready; may be
slow) and ``generate(request, progress, cancel)`` (turn one request into images). Callers
validate a request against the capabilities before any compute; ``generate`` validates again
so that no caller can skip it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image

    from fluxserve.engines.runtime import EffectiveRuntime


@dataclass(frozen=True)
class Capabilities:
    """What an engine accepts. Validation reads these; nothing else is assumed."""

    name: str
    family: str
    min_side: int = 64
    max_side: int = 4096
    max_megapixels: float = 4.0
    size_multiple: int = 16
    max_aspect_ratio: float = 4.0
    default_width: int = 1024
    default_height: int = 1024
    max_reference_images: int = 0
    reference_max_megapixels: float = 1.0
    reference_max_side: int | None = None
    """References are scaled so that neither side exceeds this (None: only the area budget)."""
    max_prompt_chars: int | None = None
    """The longest prompt the model takes, in characters (None: no limit of its own)."""
    default_steps: int = 28
    min_steps: int = 1
    max_steps: int = 100
    guidance: bool = True
    default_guidance: float | None = 4.0
    min_guidance: float = 1.0
    max_guidance: float = 10.0
    max_images: int = 10
    safety_tolerance: bool = False
    """Whether the model takes a ``safety_tolerance`` (0-5): a hosted provider's moderation setting."""
    masks: bool = False
    """Whether the model edits inside a mask (inpainting) and takes ``strength`` (image-to-image)."""
    lora_family: str | None = None
    """The LoRA adapters the model takes (``flux.2``, ``flux.1``); None: it takes none (hosted)."""

    @property
    def fixed_steps(self) -> bool:
        return self.min_steps == self.max_steps


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA adapter a request applies: its name (in ``lora_dir`` or a repo id) and its scale."""

    name: str
    scale: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale}


@dataclass(frozen=True)
class GenerationRequest:
    """One request as asked. ``None`` means "the engine's default" (and for ``seed``: draw one).

    ``prompt`` is text, or a structured JSON prompt (an object) that validation checks and serialises.
    :func:`~fluxserve.engines.validation.validate` turns it into a :class:`ResolvedRequest`.
    """

    prompt: str | Mapping[str, Any]
    references: list[Image.Image] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    n: int = 1
    safety_tolerance: int | None = None
    """The provider's moderation setting, 0 (strictest) to 5; None: the provider's default.
    Only for models whose capabilities have ``safety_tolerance``."""
    output_format: str | None = None
    """A hint, not a request: the format fluxserve will encode the results into (png, jpeg, webp).
    fluxserve re-encodes every image itself; an engine may use this to pick its own intermediate
    format (a hosted provider asked for JPEG only when the client wants JPEG) or ignore it."""
    mask: Image.Image | None = None
    """Where the first reference may change: white (255) pixels change, black (0) pixels keep the
    first image's. The size of the first reference. Only for models whose capabilities have ``masks``."""
    strength: float | None = None
    """0-1: how far the first reference may move (1: repainted from noise; 0: not at all). With
    ``mask`` the default is 1; without, a strength makes an image-to-image edit of the whole image."""
    loras: tuple[LoraChoice, ...] = ()
    """LoRA adapters to apply, with scales; none: the model as loaded."""


def warm_up_request(caps: Capabilities) -> GenerationRequest:
    """The smallest honest job for a model: about 256x256 at its fewest steps, a fixed seed."""
    size = max(caps.min_side, 256 // caps.size_multiple * caps.size_multiple)
    steps = caps.default_steps if caps.fixed_steps else caps.min_steps
    return GenerationRequest("warm-up", width=size, height=size, steps=steps, seed=0)


class Steps(IntEnum):
    PROVIDER_CHOOSES = 0
    """A hosted model that picks its own number of steps: none are sent, and usage counts none.
    Equal to 0, which is how such a job's steps are stored."""


@dataclass(frozen=True)
class ResolvedRequest:
    """A request checked against a model's capabilities, every default filled in: what engines run.

    Made by :func:`~fluxserve.engines.validation.validate`; running it twice gives the same images.
    """

    prompt: str
    """The text the model receives (a structured prompt, serialised)."""
    references: list[Image.Image]
    """Scaled to the model's per-reference budget."""
    width: int
    height: int
    steps: int
    """Denoising steps, or :attr:`Steps.PROVIDER_CHOOSES`."""
    guidance: float | None
    """None for a model that takes no guidance."""
    seed: int
    """The seed of the first image; image *i* uses ``seed_for_image(seed, i)``."""
    n: int
    safety_tolerance: int | None = None
    """The provider's moderation setting; None: the provider's default (or a model without one)."""
    output_format: str | None = None
    """The format fluxserve will encode the results into, as a hint (see :class:`GenerationRequest`)."""
    mask: Image.Image | None = None
    """Mode L at ``width`` x ``height``: 255 where the image changes, 0 where it keeps the first reference's pixels."""
    strength: float | None = None
    """Set for an image-to-image edit (masked or whole): the first reference, at ``width`` x ``height``,
    is the starting point. None: references only condition the generation."""
    loras: tuple[LoraChoice, ...] = ()
    """LoRA adapters applied, with scales (one at scale 0 is recorded but not loaded); none: the model as loaded."""


@dataclass(frozen=True)
class Progress:
    """Reported once per denoising step. ``step`` counts from 1 up to ``total_steps``.

    ``preview``, where the engine offers one, returns a small RGB picture decoded cheaply from
    the current latents (no VAE). Call it inside the callback only: the latents move on after.
    Nothing is computed unless it is called.
    """

    step: int
    total_steps: int
    image_index: int
    images: int
    preview: Callable[[], Image.Image] | None = field(default=None, compare=False, repr=False)
    stage: str | None = None
    """Hosted engines: what the step is (submitted, polling, downloading)."""

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class GeneratedImage:
    """One output image and the seed that reproduces it when generated alone (with ``n=1``)."""

    image: Image.Image
    seed: int
    seconds: float
    source: bytes | None = None
    """The file a hosted provider sent, as sent: its C2PA manifest, if it signed it, becomes the parent
    of the output's Content Credentials."""


@dataclass(frozen=True)
class GenerationResult:
    """All images of one request, the settings actually used, and where the time went."""

    images: list[GeneratedImage]
    model: str
    prompt: str
    reference_images: int
    width: int
    height: int
    steps: int
    guidance: float | None
    total_seconds: float
    cost_usd: float | None = None
    """What a hosted provider charged for these images, where known."""
    mask: bool = False
    """Whether a mask limited where the first reference changed."""
    strength: float | None = None
    """The strength of an image-to-image edit; None for any other request."""
    loras: tuple[LoraChoice, ...] = ()
    """The LoRA adapters applied, with scales."""

    @property
    def seeds(self) -> list[int]:
        return [image.seed for image in self.images]


@runtime_checkable
class Engine(Protocol):
    """The interface every back end implements."""

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def concurrency(self) -> int:
        """How many generations may run at once (1 for a local pipeline; more for a hosted provider)."""
        ...

    @property
    def provider(self) -> str:
        """Who does the work: ``local`` (this machine), or a hosted provider (``cloudflare``, ``bfl``)."""
        ...

    @property
    def remote(self) -> bool:
        """True when a provider does the work elsewhere: each call is billed, so the engine is never
        warmed up and a job it had started is not sent again after a restart; its capabilities are
        known without loading."""
        ...

    @property
    def runtime(self) -> EffectiveRuntime | None:
        """How a loaded local model runs (device, dtype, quantization, options, memory);
        None for a hosted model, or before load."""
        ...

    def configured(self) -> bool:
        """Whether the engine has what it needs to run (a hosted provider's credentials)."""
        ...

    def load(self) -> None:
        """Get ready to generate (load weights, check credentials). Idempotent."""

    def close(self) -> None:
        """Let go of what the engine holds (connections, the pipeline); it is not used after."""

    def generate(
        self,
        request: GenerationRequest | ResolvedRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Generate ``request.n`` images, or raise ``GenerationCancelled`` once ``cancel`` is set.

        A :class:`GenerationRequest` is validated first; a :class:`ResolvedRequest` is checked again."""
        ...
