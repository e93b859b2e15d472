"""The studio's mask painter in Chromium: paint over reference image 1, erase, clear, and submit a
masked edit. The browser sends OpenAI's mask (transparent where painted, the size of image 1), the
server stores it and the job says so, and the result keeps image 1's pixels outside the mask. The
painter shows only for models that take masks."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import FilePayload, Page, expect

from tests.browser_support import StudioPage
from tests.helpers import TEST_TIMEOUT
from tests.jobs_support import LiveServer

pytestmark = pytest.mark.slow

TIMEOUT = TEST_TIMEOUT * 1000
WIDTH, HEIGHT = 192, 128
RED = (220, 30, 30)
# Canvas (= image 1) pixels the strokes below paint, erase or leave alone.
PAINTED = (90, 64)  # on the middle stroke, left of the erased end
ERASED = (113, 64)  # the middle stroke's right end, erased
UNTOUCHED = (96, 5)  # far from every stroke
CLEARED = (96, 115)  # on the bottom stroke, which "Clear mask" removed


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def drag(page: Page, x0: float, y0: float, x1: float, y1: float) -> None:
    """A mouse stroke over the mask canvas, from and to fractions of its size on screen."""
    canvas = page.locator("#mask-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()  # after scrolling: clicks elsewhere may have scrolled the page
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * x1, box["y"] + box["height"] * y1, steps=8)
    page.mouse.up()


def canvas_alpha(page: Page, *points: tuple[int, int]) -> list[int]:
    """The mask canvas's alpha at each (x, y), in image 1's pixels (0: not painted)."""
    alphas: list[int] = page.evaluate(
        """(points) => { const c = document.getElementById('mask-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return points.map(([x, y]) => d[(y * c.width + x) * 4 + 3]); }""",
        [list(point) for point in points],
    )
    return alphas


def painted_count(page: Page) -> int:
    count: int = page.evaluate(
        """() => { const c = document.getElementById('mask-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n += 1; return n; }"""
    )
    return count


def multipart_file(body: bytes, content_type: str, name: str) -> bytes:
    """The bytes of form field ``name`` in a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if f'name="{name}"'.encode() in head:
            return data.removesuffix(b"\r\n")
    raise AssertionError(f"no {name} field in the form")


def test_paint_a_mask_and_submit_a_masked_edit(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server(models=["tiny-random", "tiny-random-dev"])
    studio = open_studio(server)
    page = studio.page
    page.get_by_label("Model").select_option("tiny-random")
    expect(page.locator("#mask-field")).to_be_hidden()  # no image 1 yet
    page.locator("#refs-input").set_input_files(
        [FilePayload(name="red.png", mimeType="image/png", buffer=png(WIDTH, HEIGHT, RED))]
    )
    expect(page.locator("#mask-field")).to_be_visible()
    canvas = page.locator("#mask-canvas")
    expect(canvas).to_have_js_property("width", WIDTH)
    expect(canvas).to_have_js_property("height", HEIGHT)
    assert canvas.bounding_box() == page.locator("#mask-image").bounding_box()  # laid exactly over image 1

    drag(page, 0.1, 0.9, 0.9, 0.9)
    assert canvas_alpha(page, CLEARED) == [255]
    page.get_by_role("button", name="Clear mask").click()
    assert painted_count(page) == 0

    page.get_by_label("Brush size").fill("20")
    drag(page, 0.4, 0.5, 0.6, 0.5)
    assert canvas_alpha(page, PAINTED, ERASED, UNTOUCHED, CLEARED) == [255, 255, 0, 0]
    page.get_by_label("Eraser").check()
    drag(page, 0.55, 0.5, 0.6, 0.5)  # erase the stroke's right end
    assert canvas_alpha(page, PAINTED, ERASED, UNTOUCHED, CLEARED) == [255, 0, 0, 0]
    studio.screenshot("studio-mask")

    page.get_by_label("Prompt", exact=True).fill("a blue ball")
    page.get_by_label("Strength").fill("1.5")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#mask-error")).to_contain_text("from 0 to 1")
    assert server.http.get("/v1/jobs").json()["data"] == []  # refused in the page: nothing sent

    page.get_by_label("Strength").fill("0.6")
    with page.expect_request(lambda request: request.method == "POST" and request.url.endswith("/v1/jobs")) as sent:
        page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results img")).to_have_count(1, timeout=TIMEOUT)
    expect(page.locator("#mask-error")).to_be_hidden()

    form = sent.value.post_data_buffer
    assert form is not None
    fields = sent.value.all_headers()["content-type"]
    assert b'name="width"' not in form  # a masked edit keeps image 1's size
    assert multipart_file(form, fields, "strength") == b"0.6"
    with Image.open(io.BytesIO(multipart_file(form, fields, "mask"))) as sent_mask:
        assert (sent_mask.format, sent_mask.size, sent_mask.mode) == ("PNG", (WIDTH, HEIGHT), "RGBA")
        alpha = sent_mask.getchannel("A")
        assert [alpha.getpixel(p) for p in (PAINTED, ERASED, UNTOUCHED, CLEARED)] == [0, 255, 255, 255]

    job: dict[str, Any] = server.http.get("/v1/jobs?limit=1").json()["data"][0]
    assert job["status"] == "succeeded"
    assert job["request"]["mask"] is True
    assert job["request"]["strength"] == 0.6
    assert (job["request"]["width"], job["request"]["height"]) == (WIDTH, HEIGHT)
    stored = server.service.files.read_mask(job["id"])  # mode L: 255 where the edit may change
    assert stored.size == (WIDTH, HEIGHT)
    assert [stored.getpixel(p) for p in (PAINTED, ERASED, UNTOUCHED, CLEARED)] == [255, 0, 0, 0]

    result = np.asarray(Image.open(io.BytesIO(server.http.get(job["images"][0]["url"]).content)).convert("RGB"))
    assert result.shape == (HEIGHT, WIDTH, 3)
    kept = np.asarray(stored) == 0
    assert (result[kept] == RED).all()  # outside the mask: image 1's exact pixels
    assert (result[PAINTED[1], PAINTED[0]] != RED).any()  # inside: repainted


def test_mask_painter_shows_only_for_models_that_take_masks(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server(models=["tiny-random", "tiny-random-dev"])
    page = open_studio(server).page
    page.get_by_label("Model").select_option("tiny-random")
    page.locator("#refs-input").set_input_files(
        [FilePayload(name="red.png", mimeType="image/png", buffer=png(WIDTH, HEIGHT, RED))]
    )
    expect(page.locator("#mask-field")).to_be_visible()
    drag(page, 0.3, 0.5, 0.7, 0.5)
    assert painted_count(page) > 0

    page.get_by_label("Model").select_option("tiny-random-dev")  # references, but no masks
    expect(page.locator("#refs")).to_be_visible()
    expect(page.locator("#mask-field")).to_be_hidden()
    with page.expect_request(lambda request: request.method == "POST" and request.url.endswith("/v1/jobs")) as sent:
        page.get_by_label("Prompt", exact=True).fill("a blue ball")
        page.get_by_role("button", name="Generate").click()
    form = sent.value.post_data_buffer
    assert form is not None
    assert b'name="mask"' not in form  # a hidden mask is not sent
    assert b'name="strength"' not in form
    expect(page.locator("#results img")).to_have_count(1, timeout=TIMEOUT)
    assert server.http.get("/v1/jobs?limit=1").json()["data"][0]["request"]["mask"] is False

    page.get_by_label("Model").select_option("tiny-random")
    expect(page.locator("#mask-field")).to_be_visible()  # back, with the same image 1 and its mask
    assert painted_count(page) > 0
