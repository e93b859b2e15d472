"""GET /v1/rules publishes the server's own rules, and the studio's checks agree with the server.

The page checks a structured prompt, a size and a reference image as they are entered, with the
rules the server publishes instead of copies of them. Here the page's own functions run in
Chromium over a table of inputs and must reach the server's verdict, in the server's words.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from fluxserve.api.routes.models import capabilities_of
from fluxserve.api.routes.rules import COLOUR_PATTERN
from fluxserve.engines.base import Capabilities, GenerationRequest
from fluxserve.engines.validation import MAX_SEED, MEGAPIXEL, validate
from fluxserve.errors import InvalidPrompt, InvalidRequest
from fluxserve.prompts.structured import (
    MAX_PROMPT_CHARS,
    MAX_PROMPT_DEPTH,
    MAX_PROMPT_VALUES,
    StructuredPrompt,
    prompt_text,
)
from tests.browser_support import studio_page
from tests.jobs_support import LiveServer

# -- the published rules ------------------------------------------------------------------------


def _without_colour_rule(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_colour_rule(v) for k, v in node.items() if k not in ("pattern", "x-message")}
    if isinstance(node, list):
        return [_without_colour_rule(v) for v in node]
    return node


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["pattern"]] if "pattern" in node else []
        return own + [p for v in node.values() for p in _patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


def test_rules_are_the_servers_own_limits_and_structured_prompt_schema(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(models=["tiny-random"], max_upload_mb=5, max_uploads=3)) as client:
        rules = client.get("/v1/rules").json()
    assert rules["object"] == "rules"
    assert (rules["megapixel"], rules["max_seed"]) == (MEGAPIXEL, MAX_SEED)
    assert rules["prompt"]["max_chars"] == MAX_PROMPT_CHARS
    assert (rules["prompt"]["max_depth"], rules["prompt"]["max_values"]) == (MAX_PROMPT_DEPTH, MAX_PROMPT_VALUES)
    uploads = rules["uploads"]
    assert (uploads["max_mb"], uploads["max_bytes"], uploads["max_files"]) == (5, 5 * 1024 * 1024, 3)
    assert [f["media_type"] for f in uploads["formats"]] == ["image/png", "image/jpeg", "image/webp", "image/gif"]
    schema = rules["prompt"]["structured_schema"]
    # StructuredPrompt's own schema, plus the colour rule on the colours, and nothing else.
    assert _without_colour_rule(schema) == StructuredPrompt.model_json_schema()
    colours = [
        schema["properties"]["color_palette"]["anyOf"][0]["items"],
        schema["$defs"]["Subject"]["properties"]["color"]["anyOf"][0],
    ]
    assert all(node["pattern"] == COLOUR_PATTERN and "hex colour" in node["x-message"] for node in colours)
    assert _patterns(schema) == [COLOUR_PATTERN, COLOUR_PATTERN]


def test_rules_need_a_key_once_the_server_has_keys(client: TestClient) -> None:
    _, secret = client.app.state.services.keys.create("rules")  # type: ignore[attr-defined]
    assert client.get("/v1/rules").status_code == 401
    assert client.get("/v1/rules", headers={"authorization": f"Bearer {secret}"}).status_code == 200


# -- the page agrees with the server ------------------------------------------------------------


@pytest.fixture
def studio(server: LiveServer, browser: Browser) -> Iterator[Page]:
    with studio_page(browser, server.url) as opened:
        expect(opened.page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        yield opened.page


def _subjects(**extra: Any) -> dict[str, Any]:
    return {"scene": "a harbour", "subjects": [{"description": "a boat"}], **extra}


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


PROMPTS: list[Any] = [
    _subjects(),
    {"scene": "a harbour"},
    {},
    {"subjects": []},
    {"scene": 5, "subjects": [{"description": "a"}]},
    {"scene": "", "subjects": [{"description": "a"}]},
    {"scene": "x", "subjects": []},
    {"scene": "x", "subjects": "a boat"},
    {"scene": "x", "subjects": [5]},
    {"scene": "x", "subjects": [{}]},
    {"scene": "x", "subjects": [{"description": "a"}, {"description": ""}]},
    {"scene": "x", "subjects": [{"description": "a", "position": "top"}]},
    {"scene": "x", "subjects": [{"description": "a", "position": "background", "color": "#12345G"}]},
    {"scene": "x", "subjects": [{"description": "a", "color": "sea green", "pose": None}]},
    {"scene": "x", "subjects": [{"description": "a", "type": 3}]},
    _subjects(color_palette=[]),
    _subjects(color_palette=["#FF8800"] * 16),
    _subjects(color_palette=["#FF8800"] * 17),
    _subjects(color_palette=["#abcdef", "warm amber", ""]),
    _subjects(color_palette=["#FFF"]),
    _subjects(color_palette=["#it's"]),
    _subjects(color_palette=["#FF8800", 1]),
    _subjects(color_palette="#FF8800"),
    _subjects(style=None, mood="calm", lighting=5),
    _subjects(composition=""),
    _subjects(camera=5),
    _subjects(camera={"lens": True}),
    _subjects(camera={"lens": ""}),
    _subjects(camera={"ISO": 800, "f-number": 2.8, "lens": "35mm", "focus": None, "tilt": "slight"}),
    _subjects(camera={"angle": []}),
    _subjects(effects=[""]),
    _subjects(effects="rain"),
    _subjects(effects=["rain", "bokeh"]),
    _subjects(environment={"a": [1, 2, {"b": None}]}, text="SALE"),
    _subjects(extra=_nested(MAX_PROMPT_DEPTH - 1)),
    _subjects(extra=_nested(MAX_PROMPT_DEPTH + 2)),
    _subjects(extra=list(range(MAX_PROMPT_VALUES))),
    _subjects(extra=list(range(MAX_PROMPT_VALUES - 10))),
]


def _server_verdict(value: Any) -> dict[str, Any]:
    try:
        prompt_text(value)
    except InvalidPrompt as error:
        return {"ok": False, "message": str(error), "path": error.param}
    return {"ok": True}


@pytest.mark.slow
def test_the_page_checks_structured_prompts_as_the_server_does(studio: Page) -> None:
    sources = [json.dumps(value) for value in PROMPTS] + ['{"scene": "x", "subjects": [{"description": 1e400}]}']
    page_verdicts = studio.evaluate(
        """async (sources) => {
            const { promptRules } = await import("/studio/structured.js");
            const rules = await (await fetch("/v1/rules")).json();
            const checks = promptRules(rules.prompt);
            return sources.map((source) => {
                const { ok, message, path } = checks.validate(source);
                return ok ? { ok } : { ok, message, path };
            });
        }""",
        sources,
    )
    server_verdicts = [_server_verdict(json.loads(source)) for source in sources]
    assert [v["ok"] for v in server_verdicts].count(True) >= 8  # the table holds valid prompts too
    for source, page, server in zip(sources, page_verdicts, server_verdicts, strict=True):
        assert page == server, source[:200]


@pytest.mark.slow
def test_the_pages_text_length_limit_is_the_servers(studio: Page) -> None:
    texts = ["a fox", "x" * MAX_PROMPT_CHARS, "x" * (MAX_PROMPT_CHARS + 1), "🦊" * (MAX_PROMPT_CHARS + 1)]
    problems = studio.evaluate(
        """async (texts) => {
            const { promptRules } = await import("/studio/structured.js");
            const rules = await (await fetch("/v1/rules")).json();
            return texts.map((text) => promptRules(rules.prompt).textProblem(text));
        }""",
        texts,
    )
    for text, problem in zip(texts, problems, strict=True):
        try:
            prompt_text(text)
            expected = None
        except InvalidPrompt as error:
            expected = str(error)
        assert problem == expected


_CAPS = [
    Capabilities(name="plain", family="flux.2-klein"),
    Capabilities(name="flux1", family="flux.1-dev", max_megapixels=2.0, max_side=2048),
    Capabilities(
        name="odd", family="x", size_multiple=32, min_side=100, max_side=1440, max_megapixels=1.0, max_aspect_ratio=2.5
    ),
]
_SIDES = [16, 48, 64, 100, 128, 200, 256, 512, 1000, 1024, 1040, 1440, 1536, 2048, 2064, 3072, 4096, 4112]


def _size_param(width: int, height: int, caps: Capabilities) -> str | None:
    try:
        validate(GenerationRequest(prompt="x", width=width, height=height), caps)
    except InvalidRequest as error:
        return error.param
    return None


@pytest.mark.slow
def test_the_pages_size_checks_agree_with_the_server(server: LiveServer, studio: Page) -> None:
    served = [worker.engine.capabilities for worker in server.service.workers.values()]
    for caps in [*_CAPS, *served]:
        pairs = [(w, h) for w in _SIDES for h in _SIDES]
        params = studio.evaluate(
            """async ([caps, pairs]) => {
                const { Sizes } = await import("/studio/sizes.js");
                const rules = await (await fetch("/v1/rules")).json();
                const sizes = new Sizes(caps, rules.megapixel);
                return pairs.map(([w, h]) => sizes.problem(w, h)?.param ?? null);
            }""",
            [capabilities_of(caps).model_dump(), pairs],
        )
        expected = [_size_param(w, h, caps) for w, h in pairs]
        assert params == expected, caps.name


@pytest.mark.slow
def test_the_page_takes_the_servers_upload_rules(make_server: Callable[..., LiveServer], browser: Browser) -> None:
    server = make_server(max_upload_mb=1)
    with studio_page(browser, server.url) as opened:
        page = opened.page
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        expect(page.locator("#refs-hint")).to_contain_text("PNG, JPEG, WebP or GIF, up to 1 MB each.")
        expect(page.locator("#refs-input")).to_have_attribute("accept", "image/png,image/jpeg,image/webp,image/gif")
        expect(page.locator("#seed")).to_have_attribute("max", str(MAX_SEED))
        problems = page.evaluate(
            """async () => {
                const { fileProblem } = await import("/studio/refs.js");
                const rules = await (await fetch("/v1/rules")).json();
                const file = (name, type, size) => new File([new Uint8Array(size)], name, { type });
                const limit = rules.uploads.max_bytes;
                return [
                    fileProblem(file("a.png", "image/png", limit), rules.uploads),
                    fileProblem(file("b.gif", "image/gif", 10), rules.uploads),
                    fileProblem(file("c.png", "image/png", limit + 1), rules.uploads),
                    fileProblem(file("d.bmp", "image/bmp", 10), rules.uploads),
                ];
            }"""
        )
    assert problems == [
        None,
        None,
        "c.png is 1.0 MB; the limit is 1 MB",
        "d.bmp is not a PNG, JPEG, WebP or GIF image",
    ]
