"""The studio's mask painter in Chromium: paint over reference image 1, erase, clear, and submit a
masked edit. The browser sends OpenAI's mask (transparent where painted, the size of image 1), the
server stores it and the job says so, and the result keeps image 1's pixels outside the mask. The
painter shows only for models that take masks. FLUX.1 takes image 1 alone, and only to edit it with a
mask or a strength: the page says so next to the references and sends nothing the server would refuse."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import FilePayload, Page, Request, Response, expect

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


# -- FLUX.1: no reference images, but image 1 to edit with a mask or a strength ----------------------

FLUX1 = "tiny-random-flux1"
BLUE = (30, 60, 220)


def is_job_post(request: Request) -> bool:
    return request.method == "POST" and request.url.endswith("/v1/jobs")


def refused(response: Response) -> bool:
    return response.status >= 400 and "/v1/" in response.url


def watch_api(page: Page) -> tuple[list[Request], list[str]]:
    """The job submissions the page makes, and every API answer of 400 or more (as "status url")."""
    posts: list[Request] = []
    refusals: list[str] = []
    page.on("request", lambda request: posts.append(request) if is_job_post(request) else None)
    page.on("response", lambda r: refusals.append(f"{r.status} {r.url}") if refused(r) else None)
    return posts, refusals


def add_images(page: Page, *colours: tuple[int, int, int]) -> None:
    page.locator("#refs-input").set_input_files(
        [
            FilePayload(name=f"image{i + 1}.png", mimeType="image/png", buffer=png(WIDTH, HEIGHT, colour))
            for i, colour in enumerate(colours)
        ]
    )


def refused_in_the_page(page: Page, note: str) -> None:
    """Generate is pressed and the note next to the references turns into an error saying ``note``."""
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#refs-note")).to_have_class(re.compile(r"\bfield-error\b"))
    expect(page.locator("#refs-note")).to_contain_text(note)
    expect(page.locator("#refs-drop")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#refs-drop")).to_be_focused()


def test_a_flux1_masked_edit_from_the_studio_succeeds_and_the_job_records_its_mask(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server(models=[FLUX1])
    studio = open_studio(server)
    page = studio.page
    posts, refusals = watch_api(page)
    expect(page.locator("#refs-field")).to_be_visible()  # no reference images, but image 1 to edit
    expect(page.locator("#refs-limit")).to_contain_text("image 1 only")
    add_images(page, RED)
    expect(page.locator("#mask-field")).to_be_visible()
    expect(page.locator("#refs-note")).to_contain_text(f"{FLUX1} uses image 1 only to edit it")
    page.get_by_label("Brush size").fill("20")
    drag(page, 0.4, 0.5, 0.6, 0.5)
    expect(page.locator("#refs-note")).to_be_hidden()  # a mask: image 1 is used
    studio.screenshot("studio-flux1-mask")

    page.get_by_label("Prompt", exact=True).fill("a blue ball")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results img")).to_have_count(1, timeout=TIMEOUT)
    expect(page.locator("#results .result-meta")).to_contain_text("masked edit")
    (sent,) = posts
    form, fields = sent.post_data_buffer, sent.all_headers()["content-type"]
    assert form is not None
    assert b'name="width"' not in form
    with Image.open(io.BytesIO(multipart_file(form, fields, "mask"))) as sent_mask:
        assert sent_mask.size == (WIDTH, HEIGHT)

    job: dict[str, Any] = server.http.get("/v1/jobs?limit=1").json()["data"][0]
    assert (job["status"], job["model"], job["request"]["mask"]) == ("succeeded", FLUX1, True)
    assert (job["request"]["references"], job["request"]["strength"]) == (1, 1.0)
    stored = server.service.files.read_mask(job["id"])  # 255 where the edit may change
    assert [stored.getpixel(p) for p in (PAINTED, UNTOUCHED)] == [255, 0]
    result = np.asarray(Image.open(io.BytesIO(server.http.get(job["images"][0]["url"]).content)).convert("RGB"))
    assert result.shape == (HEIGHT, WIDTH, 3)
    assert (result[np.asarray(stored) == 0] == RED).all()  # outside the mask: image 1's exact pixels
    assert (result[PAINTED[1], PAINTED[0]] != RED).any()
    page.get_by_text("Settings as code").click()
    expect(page.locator("#results pre")).to_contain_text("-F 'mask=@mask.png'")
    assert refusals == []


def test_flux1_with_image_1_but_no_mask_or_strength_says_so_and_sends_nothing(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server(models=[FLUX1])
    page = open_studio(server).page
    posts, refusals = watch_api(page)
    page.get_by_label("Prompt", exact=True).fill("a blue ball")
    add_images(page, RED)
    expect(page.locator("#refs-note")).to_be_visible()
    expect(page.locator("#refs-note")).not_to_have_class(re.compile(r"\bfield-error\b"))  # a note until Generate
    refused_in_the_page(page, "paint a mask over it below")
    expect(page.locator("#refs-note")).to_contain_text("remove image 1")

    page.get_by_label("All of image 1").check()  # image to image: the whole image, from a strength
    expect(page.locator("#refs-note")).to_be_hidden()
    expect(page.locator("#refs-drop")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Brush size")).to_be_disabled()
    expect(page.locator("#mask-help")).to_contain_text("Image to image")
    page.get_by_label("Strength").fill("")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#mask-error")).to_contain_text("needs a strength")
    assert posts == []  # refused in the page
    assert server.http.get("/v1/jobs").json()["data"] == []

    page.get_by_label("Strength").fill("0.5")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results img")).to_have_count(1, timeout=TIMEOUT)
    form = posts[0].post_data_buffer
    assert form is not None
    assert (b'name="mask"' in form, b'name="width"' in form) == (False, False)
    assert multipart_file(form, posts[0].all_headers()["content-type"], "strength") == b"0.5"
    job: dict[str, Any] = server.http.get("/v1/jobs?limit=1").json()["data"][0]
    assert (job["status"], job["model"]) == ("succeeded", FLUX1)
    assert (job["request"]["mask"], job["request"]["strength"], job["request"]["references"]) == (False, 0.5, 1)
    expect(page.locator("#results .result-meta")).to_contain_text("strength 0.5")

    page.get_by_label("Where I paint").check()
    page.get_by_label("Strength").fill("0.9")
    seed = page.locator("#results .seed-value").inner_text()
    page.get_by_role("button", name="Vary seed").click()  # puts back the job's edit: all of image 1 at 0.5
    expect(page.locator("#results .seed-value")).not_to_have_text([seed], timeout=TIMEOUT)
    expect(page.get_by_label("All of image 1")).to_be_checked()
    expect(page.get_by_label("Strength")).to_have_value("0.5")
    varied: dict[str, Any] = server.http.get("/v1/jobs?limit=1").json()["data"][0]
    assert (varied["status"], varied["request"]["mask"], varied["request"]["strength"]) == ("succeeded", False, 0.5)
    assert varied["request"]["seed"] != job["request"]["seed"]

    page.get_by_label("Where I paint").check()  # back to a mask, with none painted: explained again
    expect(page.locator("#refs-note")).to_contain_text(f"{FLUX1} uses image 1 only to edit it")
    page.get_by_role("button", name="Remove image 1").click()  # the prompt alone: a plain generation
    expect(page.locator("#refs-note")).to_be_hidden()
    expect(page.locator("#mask-field")).to_be_hidden()
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results .result-meta")).to_contain_text("64\u00d764", timeout=TIMEOUT)  # the new result
    assert len(posts) == 3
    assert posts[2].post_data_json["prompt"] == "a blue ball"  # JSON: no image
    job = server.http.get("/v1/jobs?limit=1").json()["data"][0]
    assert (job["status"], job["request"]["references"], job["request"]["mask"]) == ("succeeded", 0, False)
    assert refusals == []  # never a 400


def test_switching_from_klein_with_two_images_to_flux1_flags_image_2_and_keeps_it(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server(models=["tiny-random", FLUX1])
    studio = open_studio(server)
    page = studio.page
    posts, refusals = watch_api(page)
    page.get_by_label("Model").select_option("tiny-random")
    page.get_by_label("Prompt", exact=True).fill("a blue ball")
    add_images(page, RED, BLUE)
    expect(page.locator("#refs img")).to_have_count(2)
    expect(page.locator("#refs-note")).to_be_hidden()  # klein takes both, with or without a mask
    drag(page, 0.4, 0.5, 0.6, 0.5)

    page.get_by_label("Model").select_option(FLUX1)
    cards = page.locator("#refs li")
    expect(cards).to_have_count(2)  # kept, not silently removed
    expect(cards.nth(0)).not_to_have_class(re.compile(r"\bunused\b"))
    expect(cards.nth(1)).to_have_class(re.compile(r"\bunused\b"))
    expect(cards.nth(1).locator(".ref-label")).to_have_text("image 2 · not sent")
    expect(page.locator("#refs-note")).to_contain_text(f"{FLUX1} edits image 1 alone")
    expect(page.locator("#refs-note")).to_contain_text("remove image 2")
    expect(page.locator("#refs-note")).not_to_contain_text("uses image 1 only")  # its mask came along
    expect(page.locator("#mask-field")).to_be_visible()
    assert painted_count(page) > 0
    studio.screenshot("studio-flux1-extra-image")
    refused_in_the_page(page, "remove image 2")
    assert posts == []

    page.get_by_label("Model").select_option("tiny-random")  # back: both images are used again
    expect(page.locator("#refs li.unused")).to_have_count(0)
    expect(page.locator("#refs-note")).to_be_hidden()

    page.get_by_label("Model").select_option(FLUX1)
    page.get_by_role("button", name="Remove image 2").click()
    expect(page.locator("#refs-note")).to_be_hidden()
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results img")).to_have_count(1, timeout=TIMEOUT)
    assert len(posts) == 1
    job: dict[str, Any] = server.http.get("/v1/jobs?limit=1").json()["data"][0]
    assert (job["status"], job["model"], job["request"]["mask"], job["request"]["references"]) == (
        "succeeded",
        FLUX1,
        True,
        1,
    )
    assert refusals == []
