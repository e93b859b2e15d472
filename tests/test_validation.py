"""Validation of requests against capabilities: every rule, with the message a user sees."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxserve.engines.base import Capabilities, GenerationRequest, ResolvedRequest, Steps
from fluxserve.engines.catalog import FAMILIES
from fluxserve.engines.hosted.catalog import HOSTED
from fluxserve.engines.validation import MEGAPIXEL, nearest_valid_size, parse_size, seed_for_image, validate
from fluxserve.errors import InvalidImage, InvalidPrompt, InvalidRequest
from tests.helpers import photo

KLEIN = FAMILIES["flux.2-klein"].capabilities("flux.2-klein-4b")
BASE = FAMILIES["flux.2-klein-base"].capabilities("flux.2-klein-base-4b")
DEV = FAMILIES["flux.2-dev"].capabilities("flux.2-dev")
FLUX1 = FAMILIES["flux.1-dev"].capabilities("flux.1-dev")
SCHNELL = FAMILIES["flux.1-schnell"].capabilities("flux.1-schnell")


def req(**fields: object) -> GenerationRequest:
    values: dict[str, object] = {"prompt": "a boat", "width": 1024, "height": 1024}
    values.update(fields)
    return GenerationRequest(**values)  # type: ignore[arg-type]


def refused(caps: Capabilities, **fields: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        validate(req(**fields), caps)
    return caught.value


def test_defaults_are_filled_in_per_family() -> None:
    klein = validate(req(width=None, height=None), KLEIN)
    assert (klein.width, klein.height, klein.steps, klein.guidance) == (1024, 1024, 4, None)
    dev = validate(req(), DEV)
    assert (dev.steps, dev.guidance) == (28, 4.0)
    assert validate(req(), FLUX1).guidance == 3.5
    assert validate(req(), BASE).steps == 50
    assert validate(req(), SCHNELL).steps == 4
    assert klein.seed is not None
    assert 0 <= klein.seed < 2**32


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"width": 1000}, "width", "width 1000 is not a multiple of 16; the nearest valid size is 1008x1024"),
        ({"height": 770, "width": 1024}, "height", "nearest valid size is 1024x768"),
        ({"width": 32}, "width", "width 32 is outside 64-4096"),
        ({"width": 8192, "height": 1024}, "width", "outside 64-4096"),
        ({"width": 2048, "height": 2064}, "size", "2048x2064 is 4.03 megapixels; flux.2-klein-4b makes at most 4"),
        ({"width": 4096, "height": 512}, "size", "wider than 4:1; the nearest valid size is 4096x1024"),
        ({"width": 1024, "height": None}, "width", "send both width and height"),
        ({"width": "1024"}, "width", "must be a whole number"),
    ],
)
def test_size_errors_say_what_to_send_instead(fields: dict[str, object], param: str, message: str) -> None:
    error = refused(KLEIN, **fields)
    assert error.param == param
    assert message in str(error)


def test_four_megapixels_means_2048_squared_for_flux2_and_two_for_flux1() -> None:
    assert validate(req(width=2048, height=2048), KLEIN).width == 2048
    error = refused(FLUX1, width=1536, height=1536)
    assert "flux.1-dev makes at most 2" in str(error)


def test_fixed_steps_for_distilled_klein() -> None:
    assert validate(req(steps=4), KLEIN).steps == 4
    error = refused(KLEIN, steps=20)
    assert error.param == "steps"
    assert "always runs 4 steps; omit steps or send 4" in str(error)


@pytest.mark.parametrize("steps", [0, 101, -3])
def test_steps_outside_the_range(steps: int) -> None:
    error = refused(DEV, steps=steps)
    assert error.param == "steps"
    assert "outside 1-100 for flux.2-dev (the default is 28)" in str(error)


def test_schnell_allows_one_to_eight_steps() -> None:
    assert validate(req(steps=1), SCHNELL).steps == 1
    assert "outside 1-8" in str(refused(SCHNELL, steps=9))


@pytest.mark.parametrize(
    ("guidance", "message"), [(0.5, "outside 1-10"), (11, "outside 1-10"), (float("nan"), "number")]
)
def test_guidance_range(guidance: float, message: str) -> None:
    error = refused(DEV, guidance=guidance)
    assert error.param == "guidance"
    assert message in str(error)


def test_guidance_on_models_without_it_is_refused_not_ignored() -> None:
    for caps in (KLEIN, SCHNELL):
        assert "takes no guidance" in str(refused(caps, guidance=3.5))


def test_seed_zero_is_kept_and_bad_seeds_are_refused() -> None:
    assert validate(req(seed=0), KLEIN).seed == 0
    assert validate(req(seed=2**32 - 1), KLEIN).seed == 2**32 - 1
    for bad in (-1, 2**32, 1.5, True):
        assert refused(KLEIN, seed=bad).param == "seed"


def test_seeds_of_later_images_wrap_around() -> None:
    assert seed_for_image(5, 2) == 7
    assert seed_for_image(2**32 - 1, 1) == 0


@pytest.mark.parametrize("n", [0, 11, -1])
def test_number_of_images(n: int) -> None:
    error = refused(KLEIN, n=n)
    assert error.param == "n"
    assert "outside 1-10" in str(error)


def test_prompts_are_checked() -> None:
    with pytest.raises(InvalidPrompt, match="empty"):
        validate(req(prompt="   "), KLEIN)
    with pytest.raises(InvalidPrompt, match="10000"):
        validate(req(prompt="x" * 10_001), KLEIN)


def test_reference_count_per_family() -> None:
    four = [photo(64, 64)] * 4
    assert len(validate(req(references=four), KLEIN).references) == 4
    error = refused(KLEIN, references=[photo(64, 64)] * 5)
    assert error.param == "image"
    assert "5 reference images sent; flux.2-klein-4b takes at most 4" in str(error)
    assert len(validate(req(references=[photo(64, 64)] * 6), DEV).references) == 6
    assert "takes no reference images" in str(refused(FLUX1, references=[photo(64, 64)]))


def test_small_and_elongated_references_are_refused_with_their_index() -> None:
    with pytest.raises(InvalidImage) as small:
        validate(req(references=[photo(64, 64), photo(63, 200)]), KLEIN)
    assert small.value.param == "image[1]"
    assert "at least 64 px" in str(small.value)
    with pytest.raises(InvalidImage, match="more elongated than 8:1"):
        validate(req(references=[photo(900, 100)]), KLEIN)


def test_large_references_are_scaled_down_to_the_budget_keeping_aspect() -> None:
    big = photo(2000, 1500)
    scaled = validate(req(references=[big]), KLEIN).references[0]
    assert scaled.width * scaled.height <= MEGAPIXEL
    assert scaled.width * scaled.height > 0.98 * MEGAPIXEL
    assert abs(scaled.width / scaled.height - 2000 / 1500) < 0.01
    small = photo(300, 200)
    assert validate(req(references=[small]), KLEIN).references[0] is small


def test_parse_size() -> None:
    assert parse_size("1024x768") == (1024, 768)
    assert parse_size(" 512X512 ") == (512, 512)
    assert parse_size("auto") is None
    for bad in ("1024", "x768", "1024x", "-5x10", "axb", "10x10x10"):
        with pytest.raises(InvalidRequest, match="WIDTHxHEIGHT"):
            parse_size(bad)


@given(
    st.integers(1, 20_000),
    st.integers(1, 20_000),
    st.sampled_from([KLEIN, FLUX1, replace(KLEIN, max_aspect_ratio=2.0)]),
)
def test_the_suggested_size_is_always_valid(width: int, height: int, caps: Capabilities) -> None:
    w, h = nearest_valid_size(width, height, caps)
    validate(req(width=w, height=h), caps)  # does not raise


def test_a_valid_size_is_its_own_nearest() -> None:
    assert nearest_valid_size(1024, 768, KLEIN) == (1024, 768)
    assert nearest_valid_size(1000, 1000, KLEIN) == (1008, 1008)


def test_a_prompt_longer_than_the_model_takes_is_refused() -> None:
    caps = replace(FAMILIES["flux.1-schnell"].capabilities("short"), max_prompt_chars=10)
    assert validate(GenerationRequest("ten chars!"), caps).prompt == "ten chars!"
    with pytest.raises(InvalidPrompt, match="11 characters; short takes at most 10") as refused:
        validate(GenerationRequest("eleven char"), caps)
    assert refused.value.param == "prompt"


def test_references_are_scaled_below_a_side_limit_keeping_their_shape() -> None:
    caps = replace(FAMILIES["flux.2-dev"].capabilities("side"), reference_max_side=511, reference_max_megapixels=4.0)
    wide, small = photo(1200, 800), photo(400, 300)
    fitted = validate(GenerationRequest("x", references=[wide, small]), caps).references
    assert fitted[0].size == (511, 340)  # one resize, by the side limit, not the area budget
    assert fitted[1] is small


def test_safety_tolerance_only_where_the_model_has_a_setting() -> None:
    assert validate(req(), KLEIN).safety_tolerance is None
    for caps in (KLEIN, DEV, FLUX1):
        error = refused(caps, safety_tolerance=2)
        assert error.param == "safety_tolerance"
        assert f"{caps.name} has no safety filter setting; omit safety_tolerance" in str(error)
    assert "safety_tolerance" in str(refused(HOSTED["cf:flux-2-dev"].capabilities, safety_tolerance=2))


def test_safety_tolerance_zero_to_five_on_bfl() -> None:
    for name in ("bfl:flux-2-pro", "bfl:flux-2-flex", "bfl:flux-2-klein-4b"):
        caps = HOSTED[name].capabilities
        assert caps.safety_tolerance
        assert validate(req(), caps).safety_tolerance is None  # the engine sends BFL's default
        assert [validate(req(safety_tolerance=v), caps).safety_tolerance for v in (0, 5)] == [0, 5]
    pro = HOSTED["bfl:flux-2-pro"].capabilities
    for bad in (6, -1):
        error = refused(pro, safety_tolerance=bad)
        assert error.param == "safety_tolerance"
        assert f"safety_tolerance {bad} is outside 0-5" in str(error)
    for bad in (2.5, True, "2"):
        assert "whole number" in str(refused(pro, safety_tolerance=bad))


def test_the_output_format_hint_survives_validation() -> None:
    assert validate(req(output_format="jpeg"), KLEIN).output_format == "jpeg"


# -- what validate() returns ------------------------------------------------------------------


def test_validation_resolves_every_field_into_a_resolved_request() -> None:
    resolved = validate(GenerationRequest({"scene": "a harbour", "subjects": [{"description": "a boat"}]}), BASE)
    assert isinstance(resolved, ResolvedRequest)
    assert resolved.prompt.startswith('{"scene":"a harbour"')  # a structured prompt arrives serialised
    assert (resolved.width, resolved.height, resolved.steps) == (1024, 1024, BASE.default_steps)
    assert resolved.guidance == BASE.default_guidance
    assert isinstance(resolved.seed, int)


def test_a_model_that_chooses_its_steps_says_so_and_a_stored_job_resolves_again() -> None:
    pro = HOSTED["bfl:flux-2-pro"].capabilities
    resolved = validate(GenerationRequest("a boat", width=64, height=64), pro)
    assert resolved.steps is Steps.PROVIDER_CHOOSES
    stored = GenerationRequest("a boat", width=64, height=64, steps=0, seed=resolved.seed)  # as a job keeps it
    assert validate(stored, pro) == resolved
    assert validate(resolved, pro) == resolved  # idempotent
