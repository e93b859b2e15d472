"""What every hosted engine shares: validation, one provider call per image, coarse progress, cost.

A provider makes one image per call, so ``n`` images are ``n`` calls, each with its seed
(``seed + i``, as locally). Progress is coarse: per image, the stages the engine reports
(for example submitted, polling, downloading). A subclass implements :meth:`configured`,
:meth:`missing_settings` and :meth:`generate_one`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from PIL import Image

from fluxserve.engines.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    Progress,
    ProgressCallback,
    ResolvedRequest,
)
from fluxserve.engines.hosted.catalog import HostedModel
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.engines.validation import seed_for_image, validate
from fluxserve.errors import GenerationCancelled, ModelUnavailable

Stage = Callable[[str], None]
"""Called by generate_one as it moves on: stage("submitted"), stage("polling"), ..."""


@dataclass(frozen=True)
class HostedImage:
    image: Image.Image
    cost_usd: float | None = None
    source: bytes | None = None
    """The file as the provider sent it (BFL signs its results with C2PA Content Credentials)."""


class HostedEngine(ABC):
    stages: tuple[str, ...] = ("submitted", "downloading")
    """The stages generate_one reports, in order: progress counts them per image."""

    def __init__(
        self,
        model: HostedModel,
        options: ProviderOptions,
        *,
        transport: httpx.BaseTransport | None = None,
        slots: threading.Semaphore | None = None,
    ) -> None:
        """``slots`` bounds the calls in flight to the provider, shared by every model of one provider
        (BFL allows 24 tasks per account, not per model); default: this engine's own ``concurrency``."""
        self.model = model
        self.options = options
        self.slots = slots if slots is not None else threading.BoundedSemaphore(self.concurrency)
        self.client = httpx.Client(
            timeout=httpx.Timeout(options.timeout_seconds, connect=min(10.0, options.timeout_seconds)),
            transport=transport,
            follow_redirects=False,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self.model.capabilities

    @property
    @abstractmethod
    def concurrency(self) -> int: ...

    @abstractmethod
    def configured(self) -> bool:
        """Whether the settings this provider needs are given."""

    @abstractmethod
    def missing_settings(self) -> str:
        """What to set, for the message when it is not configured."""

    def close(self) -> None:
        """Close the connections to the provider; the engine is not used after."""
        self.client.close()

    @property
    def provider(self) -> str:
        return self.model.provider

    @property
    def remote(self) -> bool:
        return True

    @property
    def runtime(self) -> None:
        """Hosted: the provider runs the model, so there is no local runtime to report."""
        return None

    def load(self) -> None:
        if not self.configured():
            raise ModelUnavailable(f"{self.model.name} needs {self.missing_settings()}")

    def generate(
        self,
        request: GenerationRequest | ResolvedRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        self.load()
        resolved = validate(request, self.capabilities)
        started = time.perf_counter()
        images: list[GeneratedImage] = []
        costs: list[float | None] = []
        for index in range(resolved.n):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled()
            image_started = time.perf_counter()
            seed = seed_for_image(resolved.seed, index)
            self._take_slot(cancel)
            try:
                made = self.generate_one(resolved, seed, self._stage_reporter(progress, index, resolved.n), cancel)
            finally:
                self.slots.release()
            images.append(GeneratedImage(made.image, seed, time.perf_counter() - image_started, made.source))
            costs.append(made.cost_usd)
        return GenerationResult(
            images=images,
            model=self.model.name,
            prompt=resolved.prompt,
            reference_images=len(resolved.references),
            width=resolved.width,
            height=resolved.height,
            steps=int(resolved.steps),
            guidance=resolved.guidance,
            total_seconds=time.perf_counter() - started,
            cost_usd=None if any(c is None for c in costs) else round(sum(c or 0.0 for c in costs), 6),
        )

    def _take_slot(self, cancel: threading.Event | None) -> None:
        """Wait for a free slot at the provider; a job canceled meanwhile stops waiting."""
        while not self.slots.acquire(timeout=0.1):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled()

    def _stage_reporter(self, progress: ProgressCallback | None, index: int, images: int) -> Stage:
        def stage(name: str) -> None:
            if progress is None:
                return
            number = self.stages.index(name) + 1
            total = len(self.stages)
            progress(Progress(index * total + number, images * total, index, images, stage=name))

        return stage

    @abstractmethod
    def generate_one(
        self, request: ResolvedRequest, seed: int, stage: Stage, cancel: threading.Event | None
    ) -> HostedImage:
        """One image of a validated request, with ``seed``."""
