"""The studio's mask painter in Chromium: paint over reference image 1, erase, clear, and submit a
masked edit; the server receives the mask (the job says so) and keeps the unpainted pixels."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, FilePayload, expect

from tests.browser_support import StudioPage, studio_page
from tests.helpers import TEST_TIMEOUT
from tests.jobs_support import LiveServer

pytestmark = pytest.mark.slow

TIMEOUT = TEST_TIMEOUT * 1000


@pytest.fixture
def open_studio(browser: Browser) -> Iterator[Callable[..., StudioPage]]:
    with contextlib.ExitStack() as stack:

        def open_(server: LiveServer) -> StudioPage:
            studio = stack.enter_context(studio_page(browser, server.url))
            studio.page.set_default_timeout(TIMEOUT)
            expect(studio.page.locator("body")).to_have_attribute("data-ready", "true")
            return studio

        yield open_


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def test_paint_a_mask_and_submit_a_masked_edit(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    studio = open_studio(server)
    page = studio.page
    page.get_by_label("Model").select_option("tiny-random")
    expect(page.locator("#mask-field")).to_be_hidden()  # no image 1 yet
    page.locator("#refs-input").set_input_files(
        [FilePayload(name="red.png", mimeType="image/png", buffer=png(192, 128, (220, 30, 30)))]
    )
    expect(page.locator("#mask-field")).to_be_visible()
    canvas = page.locator("#mask-canvas")
    expect(canvas).to_have_js_property("width", 192)
    box = canvas.bounding_box()
    assert box is not None

    def drag(x0: float, y0: float, x1: float, y1: float) -> None:
        page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * x1, box["y"] + box["height"] * y1, steps=5)
        page.mouse.up()

    drag(0.1, 0.9, 0.9, 0.9)  # painted, then cleared: not in the mask
    page.get_by_role("button", name="Clear mask").click()
    page.get_by_label("Brush size").fill("20")
    drag(0.4, 0.5, 0.6, 0.5)
    page.get_by_label("Eraser").check()
    drag(0.55, 0.5, 0.6, 0.5)  # erase the stroke's right end
    page.get_by_label("Strength").fill("0.6")
    painted = page.evaluate("""() => { const c = document.getElementById('mask-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n += 1; return [n, c.width, c.height]; }""")
    print("PAINTED", painted)
    studio.screenshot("studio-mask")

    page.get_by_label("Prompt", exact=True).fill("a blue ball")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results img")).to_have_count(1, timeout=TIMEOUT)
    jobs: list[dict[str, Any]] = server.http.get("/v1/jobs?limit=1").json()["data"]
    job = jobs[0]
    assert job["status"] == "succeeded"
    assert job["request"]["mask"] is True
    assert job["request"]["strength"] == 0.6
    assert (job["request"]["width"], job["request"]["height"]) == (192, 128)
    result = np.asarray(Image.open(io.BytesIO(server.http.get(job["images"][0]["url"]).content)).convert("RGB"))
    assert (result[0:10, :] == (220, 30, 30)).all()  # far from the stroke: image 1's pixels
    assert (result[110:128, :] == (220, 30, 30)).all()  # the cleared stroke left nothing
    assert (result[64, 90] != (220, 30, 30)).any()  # the painted stroke changed
    assert (result[64, 113] == (220, 30, 30)).all()  # the erased end kept image 1's pixels
