"""Structured JSON prompts: the schema, the error paths, the serialisation the model receives."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fluxserve.errors import InvalidPrompt
from fluxserve.prompts.structured import prompt_text

VALID: dict[str, Any] = {
    "scene": "a rainy street market at night",
    "subjects": [
        {"type": "person", "description": "a fruit seller", "pose": "smiling", "position": "foreground"},
        {"type": "object", "description": "paper lanterns", "position": "background"},
    ],
    "style": "cinematic photo",
    "color_palette": ["#FF6B35", "#004E89", "#1A1A2E"],
    "lighting": "neon reflections",
    "mood": "lively",
    "background": "wet cobblestones",
    "composition": "rule of thirds",
    "camera": {
        "angle": "eye level",
        "distance": "medium",
        "focus": "sharp",
        "lens": "35mm",
        "f-number": "f/2.0",
        "ISO": 800,
    },
    "effects": ["light rain", "bokeh"],
}


def test_a_valid_prompt_is_serialised_compactly() -> None:
    text = prompt_text(VALID)
    assert json.loads(text) == VALID
    assert ", " not in text
    assert ": " not in text


def test_serialisation_depends_on_content_not_key_order() -> None:
    shuffled = dict(reversed(list(VALID.items())))
    shuffled["subjects"] = [dict(reversed(list(s.items()))) for s in VALID["subjects"]]
    assert prompt_text(shuffled) == prompt_text(VALID)
    assert prompt_text(VALID).startswith('{"scene":')


def test_unknown_keys_are_kept_at_every_level() -> None:
    prompt = {**VALID, "environment": "tropical", "text": {"content": "OPEN", "font": "serif"}}
    prompt["subjects"] = [{**VALID["subjects"][0], "clothing": "apron"}]
    parsed = json.loads(prompt_text(prompt))
    assert parsed["environment"] == "tropical"
    assert parsed["text"] == {"content": "OPEN", "font": "serif"}
    assert parsed["subjects"][0]["clothing"] == "apron"


def test_non_ascii_text_is_kept_as_is() -> None:
    prompt = {"scene": "東京の夜景", "subjects": [{"description": "кот на крыше"}]}
    text = prompt_text(prompt)
    assert "東京の夜景" in text
    assert "кот на крыше" in text


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        ({"color_palette": ["#FF6B35", "#12345", "#004E89"]}, "prompt.color_palette[1]", "#RRGGBB"),
        ({"color_palette": ["#GGGGGG"]}, "prompt.color_palette[0]", "not a valid hex colour"),
        ({"scene": None}, "prompt.scene", "valid string"),
        ({"scene": 42}, "prompt.scene", "valid string"),
        ({"subjects": "a cat"}, "prompt.subjects", "valid list"),
        ({"subjects": []}, "prompt.subjects", "at least 1"),
        ({"subjects": [{"type": "animal"}]}, "prompt.subjects[0].description", "is required"),
        ({"subjects": [{"description": "a cat", "position": "top"}]}, "prompt.subjects[0].position", "'foreground'"),
        ({"subjects": [{"description": "a cat", "color": "#12"}]}, "prompt.subjects[0].color", "#RRGGBB"),
        ({"camera": "wide"}, "prompt.camera", "valid dictionary"),
        ({"camera": {"ISO": [800]}}, "prompt.camera.ISO", "valid"),
        ({"effects": ["rain", 3]}, "prompt.effects[1]", "valid string"),
    ],
)
def test_errors_name_the_exact_field(change: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(InvalidPrompt) as caught:
        prompt_text({**VALID, **change})
    assert caught.value.param == path
    assert path in str(caught.value)
    assert reason in str(caught.value)


def test_a_missing_required_field() -> None:
    prompt = dict(VALID)
    del prompt["scene"]
    with pytest.raises(InvalidPrompt, match=r"prompt\.scene is required"):
        prompt_text(prompt)


def test_named_colours_are_allowed_beside_hex() -> None:
    assert "warm amber" in prompt_text({**VALID, "color_palette": ["warm amber", "#abcdef"]})


@pytest.mark.parametrize("text", ["a cat", "  leading space kept", "猫がピアノを弾く", '{"looks": "like json"}'])
def test_text_prompts_pass_through_untouched(text: str) -> None:
    assert prompt_text(text) == text


@pytest.mark.parametrize(("value", "reason"), [("", "empty"), (" \n", "empty"), (42, "not int"), ([1], "not list")])
def test_other_prompts_are_refused(value: object, reason: str) -> None:
    with pytest.raises(InvalidPrompt, match=reason):
        prompt_text(value)


def test_the_root_of_the_path_can_be_named() -> None:
    with pytest.raises(InvalidPrompt) as caught:
        prompt_text({"scene": "x"}, param="input")
    assert caught.value.param == "input.subjects"
