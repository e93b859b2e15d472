"""The prompt-embedding cache and reference latents reused within a request, on tiny pipelines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import torch

from fluxserve.engines.base import GenerationRequest
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.prompt_cache import EmbeddingCache, Embeddings
from fluxserve.engines.runtime import ModelRuntime
from tests.helpers import photo

FLUX2 = ("tiny-random", "tiny-random-base", "tiny-random-dev")
FAMILIES = (*FLUX2, "tiny-random-flux1")


def engine_with(options: EngineOptions, name: str, prompt_cache_mb: float) -> DiffusersEngine:
    engine = DiffusersEngine(name, replace(options, runtime=ModelRuntime(prompt_cache_mb=prompt_cache_mb)))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def uncached(options: EngineOptions) -> dict[str, DiffusersEngine]:
    return {name: engine_with(options, name, 0) for name in FAMILIES}


@pytest.fixture
def cached(options: EngineOptions, request: pytest.FixtureRequest) -> DiffusersEngine:
    """A fresh engine (an empty cache) for the model named by the test's ``name`` parameter."""
    return engine_with(options, request.node.callspec.params["name"], 64)


@contextmanager
def counting_calls(*modules: Any) -> Iterator[list[int]]:
    """How many times the forward of any of ``modules`` ran while open."""
    calls = [0]
    handles = [module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for module in modules]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def text_encoders(engine: DiffusersEngine) -> list[Any]:
    pipeline = engine._pipeline
    return [encoder for encoder in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None)) if encoder]


def ask(name: str, **overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {"prompt": "a red fox in snow", "width": 64, "height": 64, "seed": 7, "n": 2}
    if name != "tiny-random":
        fields["steps"] = 3
    if name == "tiny-random-base":
        fields["guidance"] = 4.0  # real classifier-free guidance: a negative prompt is encoded too
    if name in FLUX2:
        fields["references"] = [photo(80, 64)]
    return GenerationRequest(**{**fields, **overrides})


def pixels(engine: DiffusersEngine, request: GenerationRequest) -> list[bytes]:
    return [item.image.tobytes() for item in engine.generate(request).images]


@pytest.mark.parametrize("name", FAMILIES)
def test_cached_embeddings_give_byte_identical_images(
    uncached: dict[str, DiffusersEngine], cached: DiffusersEngine, name: str
) -> None:
    request = ask(name)
    expected = pixels(uncached[name], request)
    assert pixels(cached, request) == expected  # the first call fills the cache
    assert pixels(cached, request) == expected  # the second comes from it
    assert len(cached._prompts.cache) >= 1  # type: ignore[union-attr]


@pytest.mark.parametrize("name", FAMILIES)
def test_the_text_encoder_runs_once_for_four_images(
    uncached: dict[str, DiffusersEngine], cached: DiffusersEngine, name: str
) -> None:
    encodings_per_prompt = 2 if name == "tiny-random-base" else 1  # the prompt and the empty negative
    encoders = text_encoders(cached)
    with counting_calls(*encoders) as calls:
        cached.generate(ask(name, n=4, references=[]))
    assert calls[0] == encodings_per_prompt * len(encoders)
    with counting_calls(*text_encoders(uncached[name])) as calls:
        uncached[name].generate(ask(name, n=2, references=[]))
    assert calls[0] == 2 * encodings_per_prompt * len(encoders)  # without the cache: once per image


@pytest.mark.parametrize("name", ["tiny-random"])
def test_a_repeated_prompt_is_not_encoded_again_and_a_new_one_is(cached: DiffusersEngine, name: str) -> None:
    cached.generate(ask(name, n=1))
    with counting_calls(cached._pipeline.text_encoder) as calls:
        cached.generate(ask(name, n=1, seed=8))
        assert calls[0] == 0
        cached.generate(ask(name, n=1, prompt="a blue heron"))
        assert calls[0] == 1


@pytest.mark.parametrize("name", FLUX2)
def test_the_vae_encodes_reference_images_once_per_request(
    uncached: dict[str, DiffusersEngine], cached: DiffusersEngine, name: str
) -> None:
    request = ask(name, n=3, references=[photo(80, 64), photo(64, 96, seed=1)])
    with counting_calls(cached._pipeline.vae.encoder) as calls:
        images = pixels(cached, request)
    assert calls[0] == 2  # two references, three images
    with counting_calls(uncached[name]._pipeline.vae.encoder) as calls:
        assert pixels(uncached[name], request) == images
    assert calls[0] == 6
    assert "prepare_image_latents" not in vars(cached._pipeline)  # the pipeline is as it was


@pytest.mark.parametrize("name", ["tiny-random-flux1"])
def test_the_key_holds_what_changes_the_embeddings(cached: DiffusersEngine, name: str) -> None:
    embedder = cached._prompts
    assert embedder is not None
    short = embedder.replace_prompt({"prompt": "a cat", "max_sequence_length": 64})
    long = embedder.replace_prompt({"prompt": "a cat", "max_sequence_length": 128})
    assert short["prompt_embeds"].shape[1] == 64
    assert long["prompt_embeds"].shape[1] == 128
    assert set(short) == {"prompt_embeds", "pooled_prompt_embeds", "max_sequence_length"}
    assert len(embedder.cache) == 2


def embeddings_of(nbytes: int) -> Embeddings:
    return Embeddings({"prompt_embeds": torch.zeros(nbytes, dtype=torch.uint8)})


def test_the_cache_stays_within_its_bytes_and_evicts_the_least_recently_used() -> None:
    cache = EmbeddingCache(max_bytes=1000)
    for key in "abc":
        cache.put((key,), embeddings_of(300))
    assert cache.nbytes == 900
    assert cache.get(("a",)) is not None  # now "b" is the oldest
    cache.put(("d",), embeddings_of(300))
    assert ("b",) not in cache
    assert [("a",) in cache, ("c",) in cache, ("d",) in cache] == [True, True, True]
    cache.put(("e",), embeddings_of(650))  # evicts "c", then "a"
    assert ("c",) not in cache
    assert ("a",) not in cache
    assert cache.nbytes == 950 <= cache.max_bytes
    cache.put(("huge",), embeddings_of(1001))  # larger than the whole cache: not kept, nothing evicted
    assert ("huge",) not in cache
    assert cache.nbytes == 950


def test_putting_a_key_again_replaces_it_without_counting_it_twice() -> None:
    cache = EmbeddingCache(max_bytes=1000)
    cache.put(("a",), embeddings_of(400))
    cache.put(("a",), embeddings_of(500))
    assert (len(cache), cache.nbytes) == (1, 500)


@pytest.mark.parametrize("name", ["tiny-random"])
def test_a_zero_budget_turns_the_cache_off(uncached: dict[str, DiffusersEngine], name: str) -> None:
    assert uncached[name]._prompts is None
