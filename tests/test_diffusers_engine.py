"""The local engine, through the real diffusers pipeline classes on tiny random weights."""

from __future__ import annotations

import threading

import pytest

from fluxserve.engines.base import Engine, GenerationRequest, Progress
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.errors import EngineNotReady, GenerationCancelled, InvalidRequest
from tests.conftest import TINY
from tests.helpers import photo, png_bytes

FAMILIES = {
    "tiny-random": ("flux.2-klein", "Flux2KleinPipeline"),
    "tiny-random-base": ("flux.2-klein-base", "Flux2KleinPipeline"),
    "tiny-random-dev": ("flux.2-dev", "Flux2Pipeline"),
    "tiny-random-flux1": ("flux.1-dev", "FluxPipeline"),
    "tiny-random-schnell": ("flux.1-schnell", "FluxPipeline"),
}


def request(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {"prompt": "a lighthouse at dusk", "width": 128, "height": 96, "seed": 11}
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def small_steps(engine: DiffusersEngine) -> int | None:
    """Few steps for models that allow choosing; None keeps a fixed-step model's own."""
    return None if engine.capabilities.fixed_steps else 3


@pytest.mark.parametrize("name", TINY)
def test_each_family_loads_its_pipeline_class_and_implements_the_interface(
    engines: dict[str, DiffusersEngine], name: str
) -> None:
    engine = engines[name]
    family, pipeline_class = FAMILIES[name]
    assert isinstance(engine, Engine)
    assert engine.capabilities.family == family
    assert engine.capabilities.name == name
    assert type(engine._pipeline).__name__ == pipeline_class


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize(("width", "height"), [(128, 96), (64, 256)])
def test_each_family_generates_at_the_requested_size(
    engines: dict[str, DiffusersEngine], name: str, width: int, height: int
) -> None:
    engine = engines[name]
    result = engine.generate(request(width=width, height=height, steps=small_steps(engine)))
    assert [item.image.size for item in result.images] == [(width, height)]
    assert result.images[0].image.mode == "RGB"
    assert (result.width, result.height) == (width, height)
    assert result.images[0].seed == 11


@pytest.mark.parametrize("name", TINY)
def test_the_same_seed_gives_identical_bytes_and_other_seeds_differ(
    engines: dict[str, DiffusersEngine], name: str
) -> None:
    engine = engines[name]
    steps = small_steps(engine)
    first = png_bytes(engine.generate(request(steps=steps)).images[0].image)
    again = png_bytes(engine.generate(request(steps=steps)).images[0].image)
    other = png_bytes(engine.generate(request(steps=steps, seed=12)).images[0].image)
    assert first == again
    assert first != other


def test_a_seed_is_drawn_when_none_is_given_and_reproduces_the_image(klein: DiffusersEngine) -> None:
    drawn = klein.generate(request(seed=None))
    seed = drawn.images[0].seed
    assert 0 <= seed < 2**32
    replay = klein.generate(request(seed=seed))
    assert png_bytes(replay.images[0].image) == png_bytes(drawn.images[0].image)


def test_seed_zero_is_a_real_seed(klein: DiffusersEngine) -> None:
    zero = klein.generate(request(seed=0))
    assert zero.seeds == [0]
    assert png_bytes(zero.images[0].image) == png_bytes(klein.generate(request(seed=0)).images[0].image)


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-dev"])
def test_several_images_each_reproduce_alone_from_their_seed(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine = engines[name]
    batch = engine.generate(request(n=3, seed=100, steps=small_steps(engine)))
    assert batch.seeds == [100, 101, 102]
    images = [png_bytes(item.image) for item in batch.images]
    assert len(set(images)) == 3
    for item, expected in zip(batch.images, images, strict=True):
        alone = engine.generate(request(n=1, seed=item.seed, steps=small_steps(engine)))
        assert png_bytes(alone.images[0].image) == expected


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-base", "tiny-random-dev"])
@pytest.mark.parametrize("count", [1, 2])
def test_reference_images_condition_flux2_models(engines: dict[str, DiffusersEngine], name: str, count: int) -> None:
    engine = engines[name]
    references = [photo(160, 120, seed=i) for i in range(count)]
    steps = small_steps(engine)
    with_refs = engine.generate(request(references=references, steps=steps))
    without = engine.generate(request(steps=steps))
    assert with_refs.images[0].image.size == (128, 96)
    assert with_refs.reference_images == count
    assert png_bytes(with_refs.images[0].image) != png_bytes(without.images[0].image)
    again = engine.generate(request(references=references, steps=steps))
    assert png_bytes(again.images[0].image) == png_bytes(with_refs.images[0].image)


def test_size_defaults_to_the_reference_size_when_omitted(klein: DiffusersEngine) -> None:
    result = klein.generate(request(width=None, height=None, references=[photo(200, 130)]))
    assert result.images[0].image.size == (208, 128)


def test_flux1_takes_no_reference_images(engines: dict[str, DiffusersEngine]) -> None:
    with pytest.raises(InvalidRequest, match="takes no reference images") as caught:
        engines["tiny-random-flux1"].generate(request(references=[photo(128, 128)]))
    assert caught.value.param == "image"


@pytest.mark.parametrize("name", ["tiny-random-base", "tiny-random-dev", "tiny-random-flux1"])
def test_guidance_reaches_models_that_use_it(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine = engines[name]
    low = engine.generate(request(steps=3, guidance=1.5))
    high = engine.generate(request(steps=3, guidance=7.0))
    assert low.guidance == 1.5
    assert png_bytes(low.images[0].image) != png_bytes(high.images[0].image)
    assert engine.pipeline_arguments(request(guidance=7.0, steps=3), seed=1)["guidance_scale"] == 7.0


def test_distilled_klein_is_called_with_neutral_guidance_and_refuses_a_value(klein: DiffusersEngine) -> None:
    resolved = klein.generate(request())
    assert resolved.guidance is None
    assert resolved.steps == 4
    # Above 1.0 diffusers would log a warning on every call; the engine passes exactly 1.0.
    assert klein.pipeline_arguments(request(steps=4), seed=1)["guidance_scale"] == 1.0
    with pytest.raises(InvalidRequest, match="takes no guidance"):
        klein.generate(request(guidance=3.0))


def test_flux1_passes_its_sequence_length_and_no_images(engines: dict[str, DiffusersEngine]) -> None:
    arguments = engines["tiny-random-flux1"].pipeline_arguments(request(steps=3), seed=5)
    assert arguments["max_sequence_length"] == 512
    assert "image" not in arguments


def test_schnell_takes_few_steps_a_shorter_prompt_and_no_guidance(engines: dict[str, DiffusersEngine]) -> None:
    schnell = engines["tiny-random-schnell"]
    result = schnell.generate(request())
    assert (result.steps, result.guidance) == (4, None)
    arguments = schnell.pipeline_arguments(request(steps=2), seed=5)
    assert arguments["max_sequence_length"] == 256
    assert "guidance_scale" not in arguments
    with pytest.raises(InvalidRequest, match="takes no guidance"):
        schnell.generate(request(guidance=3.5))
    with pytest.raises(InvalidRequest, match="outside 1-8"):
        schnell.generate(request(steps=20))


@pytest.mark.parametrize("name", TINY)
def test_progress_is_reported_for_every_step_of_every_image(engines: dict[str, DiffusersEngine], name: str) -> None:
    engine = engines[name]
    seen: list[Progress] = []
    result = engine.generate(request(n=2, steps=small_steps(engine)), progress=seen.append)
    total = 2 * result.steps
    assert [p.step for p in seen] == list(range(1, total + 1))
    assert {p.total_steps for p in seen} == {total}
    assert [p.image_index for p in seen] == [0] * result.steps + [1] * result.steps
    assert seen[-1].fraction == 1.0


def test_cancel_mid_run_raises_and_the_engine_works_again(klein: DiffusersEngine) -> None:
    before = png_bytes(klein.generate(request()).images[0].image)
    cancel = threading.Event()
    seen: list[int] = []

    def cancel_after_two_steps(progress: Progress) -> None:
        seen.append(progress.step)
        if progress.step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        klein.generate(request(n=2), progress=cancel_after_two_steps, cancel=cancel)
    assert seen == [1, 2]  # stopped at the next step boundary, not at the end
    after = png_bytes(klein.generate(request()).images[0].image)
    assert after == before


def test_a_request_cancelled_before_it_starts_runs_nothing(klein: DiffusersEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    seen: list[Progress] = []
    with pytest.raises(GenerationCancelled):
        klein.generate(request(), progress=seen.append, cancel=cancel)
    assert seen == []


def test_concurrent_requests_are_serialised_and_each_is_correct(klein: DiffusersEngine) -> None:
    expected = {seed: png_bytes(klein.generate(request(seed=seed)).images[0].image) for seed in (1, 2, 3)}
    results: dict[int, bytes] = {}

    def run(seed: int) -> None:
        results[seed] = png_bytes(klein.generate(request(seed=seed)).images[0].image)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected


def test_generate_before_load_says_so(options: object) -> None:
    engine = DiffusersEngine("tiny-random", options)  # type: ignore[arg-type]
    with pytest.raises(EngineNotReady, match="not loaded"):
        engine.generate(request())


def test_invalid_requests_are_refused_before_any_compute(klein: DiffusersEngine) -> None:
    seen: list[Progress] = []
    with pytest.raises(InvalidRequest, match="multiple of 16"):
        klein.generate(request(width=100), progress=seen.append)
    assert seen == []


def test_result_reports_timings(klein: DiffusersEngine) -> None:
    result = klein.generate(request(n=2))
    assert result.total_seconds > 0
    assert all(item.seconds > 0 for item in result.images)
    assert sum(item.seconds for item in result.images) <= result.total_seconds
