"""Encode a prompt once: an LRU of prompt embeddings, and reference latents reused within a request.

A request for n images calls the pipeline n times, and without help each call runs the text
encoder again (FLUX.2 [dev]'s is a 24B model) on the same prompt; variations and retries repeat
the prompt across requests. :class:`PromptEmbedder` encodes each distinct prompt once, through
the pipeline's own ``encode_prompt`` with the arguments ``__call__`` would use, and passes the
tensors back as ``prompt_embeds`` (FLUX.1 also ``pooled_prompt_embeds``; FLUX.2 [klein] base with
guidance also ``negative_prompt_embeds``, the empty prompt). The pipeline then skips its encoder,
and the image is byte-identical to an uncached call: the same function made the same tensors.

The key is everything that changes the embeddings: the kind (prompt or negative), the text, and
the pipeline's ``max_sequence_length`` and ``text_encoder_out_layers``. One cache belongs to one
loaded model, so the model is implied. Tensors stay on the device they were made on, and the
cache's byte bound counts them there.

FLUX.2 pipelines take no precomputed reference-image latents (``image`` must be PIL images: the
pipeline reads their ``.size``), so :func:`reuse_reference_latents` memoizes the pipeline's own
``prepare_image_latents`` for the length of one request instead: the VAE encodes the references
once for n images. (The VAE encodes in ``argmax`` mode, which draws no noise, so the result is
the same tensor every call.)
"""

from __future__ import annotations

import contextlib
import inspect
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

EmbeddingKey = tuple[Any, ...]


@dataclass(frozen=True)
class Embeddings:
    """The pipeline keyword arguments that stand for one encoded prompt, and their size."""

    arguments: Mapping[str, Any]

    @property
    def nbytes(self) -> int:
        return sum(int(tensor.numel() * tensor.element_size()) for tensor in self.arguments.values())


class EmbeddingCache:
    """Least recently used embeddings, at most ``max_bytes`` in all (an entry above that is not kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[EmbeddingKey, Embeddings] = OrderedDict()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: EmbeddingKey) -> bool:
        return key in self._entries

    def get(self, key: EmbeddingKey) -> Embeddings | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: EmbeddingKey, embeddings: Embeddings) -> None:
        if key in self._entries:
            self._bytes -= self._entries.pop(key).nbytes
        if embeddings.nbytes > self.max_bytes:
            return
        while self._entries and self._bytes + embeddings.nbytes > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.nbytes
        self._entries[key] = embeddings
        self._bytes += embeddings.nbytes


class PromptEmbedder:
    """Turns a pipeline's ``prompt`` argument into cached embeddings, for one loaded pipeline."""

    def __init__(self, pipeline: Any, cache: EmbeddingCache) -> None:
        self._pipeline = pipeline
        self.cache = cache
        self._flux1 = type(pipeline).__name__ == "FluxPipeline"
        self._defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(type(pipeline).__call__).parameters.items()
            if name in ("max_sequence_length", "text_encoder_out_layers")
        }

    def replace_prompt(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``arguments`` for the pipeline with the prompt given as embeddings (encoded if not cached)."""
        settings = {**self._defaults, **{k: v for k, v in arguments.items() if k in self._defaults}}
        replaced = {key: value for key, value in arguments.items() if key != "prompt"}
        replaced.update(self._embeddings("prompt", arguments["prompt"], settings).arguments)
        if self._uses_guidance(arguments):
            negative = self._embeddings("negative", "", settings).arguments["prompt_embeds"]
            replaced["negative_prompt_embeds"] = negative
        return replaced

    def _uses_guidance(self, arguments: Mapping[str, Any]) -> bool:
        """Whether FLUX.2 [klein] base will run classifier-free guidance (an empty negative prompt)."""
        distilled = getattr(self._pipeline.config, "is_distilled", True)
        return not self._flux1 and not distilled and float(arguments.get("guidance_scale", 4.0)) > 1

    def _embeddings(self, kind: str, text: str, settings: Mapping[str, Any]) -> Embeddings:
        key = (kind, text, *(_hashable(settings[name]) for name in sorted(settings)))
        found = self.cache.get(key)
        if found is None:
            found = self._encode(text, settings)
            self.cache.put(key, found)
        return found

    def _encode(self, text: str, settings: Mapping[str, Any]) -> Embeddings:
        import torch

        device = self._pipeline._execution_device
        with torch.no_grad():
            if self._flux1:
                embeds, pooled, _ = self._pipeline.encode_prompt(
                    prompt=text, prompt_2=None, device=device, num_images_per_prompt=1, **settings
                )
                return Embeddings({"prompt_embeds": embeds, "pooled_prompt_embeds": pooled})
            embeds, _ = self._pipeline.encode_prompt(prompt=text, device=device, num_images_per_prompt=1, **settings)
            return Embeddings({"prompt_embeds": embeds})


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@contextlib.contextmanager
def reuse_reference_latents(pipeline: Any) -> Iterator[None]:
    """While open, the pipeline encodes the same reference images with its VAE only once."""
    original = getattr(pipeline, "prepare_image_latents", None)
    if original is None:  # FLUX.1 takes no reference images
        yield
        return
    remembered: list[tuple[list[Any], tuple[Any, ...], Any]] = []

    def prepare_once(images: list[Any], batch_size: int, generator: Any, device: Any, dtype: Any) -> Any:
        import torch

        settings = (batch_size, str(device), dtype)
        for known_images, known_settings, result in remembered:
            same = len(known_images) == len(images) and all(
                a.shape == b.shape and torch.equal(a, b) for a, b in zip(known_images, images, strict=True)
            )
            if same and known_settings == settings:
                return result
        result = original(images=images, batch_size=batch_size, generator=generator, device=device, dtype=dtype)
        remembered.append((list(images), settings, result))
        return result

    pipeline.prepare_image_latents = prepare_once
    try:
        yield
    finally:
        del pipeline.prepare_image_latents
