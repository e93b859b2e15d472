"""Vary seed and reopening a job that used reference images (and a mask), in Chromium.

While the page stays open it keeps the images (and the mask) each job it sent was given, and
putting the job back puts those exact ones back, even after they left the form. After a reload it
cannot fetch them: each image becomes a missing place, a mask must be painted again, and the page
sends nothing until they are added again or the user says, with a button, to go on without them.
Every job submission the page makes is recorded, so "nothing was sent" is checked, not assumed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, Request, expect

from tests.browser_support import StudioPage
from tests.helpers import TEST_TIMEOUT
from tests.jobs_support import LiveServer
from tests.test_studio_mask import BLUE, FLUX1, RED, add_images, drag, multipart_file, png, watch_api

pytestmark = pytest.mark.slow

TIMEOUT = TEST_TIMEOUT * 1000
WIDTH, HEIGHT = 192, 128


def sent_images(request: Request) -> list[bytes]:
    """The bytes of every image[] part of a multipart job submission, in order."""
    body = request.post_data_buffer
    assert body is not None
    boundary = request.all_headers()["content-type"].split("boundary=", 1)[1].strip('"').encode()
    images = []
    for part in body.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="image[]"' in head:
            images.append(data.removesuffix(b"\r\n"))
    return images


def sent_mask_alpha(request: Request) -> Any:
    """The alpha channel of the mask a job submission sent (0 where the edit may change)."""
    body = request.post_data_buffer
    assert body is not None
    mask = multipart_file(body, request.all_headers()["content-type"], "mask")
    with Image.open(io.BytesIO(mask)) as image:
        return np.asarray(image.getchannel("A"), dtype=np.int16)


def latest_job(server: LiveServer) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = server.http.get("/v1/jobs?limit=1").json()["data"]
    return jobs[0]


def finished_after(page: Page, posts: list[Request], press: Callable[[], None]) -> Request:
    """Press (Generate, Vary seed), wait until its job is done and in the history; its submission."""
    before = len(posts)
    history = page.locator("#history li")
    listed = history.count()
    press()
    expect(history).to_have_count(listed + 1, timeout=TIMEOUT)
    expect(page.locator("#job-status")).to_contain_text("Done")
    assert len(posts) == before + 1
    return posts[-1]


def generate(page: Page, posts: list[Request]) -> Request:
    return finished_after(page, posts, page.get_by_role("button", name="Generate").click)


def vary(page: Page, posts: list[Request]) -> Request:
    return finished_after(page, posts, page.get_by_role("button", name="Vary seed").first.click)


def reload_and_reopen(page: Page, prompt: str) -> None:
    """Reload the page (it forgets every image it had) and reopen the job from the history."""
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_role("button", name=re.compile(f"Reopen succeeded job: {prompt}")).first.click()
    expect(page.locator("#prompt")).to_have_value(prompt)


def refused_with(page: Page, note: str) -> None:
    """The note next to the references says ``note`` as an error, and Generate was refused there."""
    expect(page.locator("#refs-note")).to_have_class(re.compile(r"\bfield-error\b"))
    expect(page.locator("#refs-note")).to_contain_text(note)
    expect(page.locator("#refs-drop")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#refs-drop")).to_be_focused()


# -- FLUX.2 [klein] with two reference images ----------------------------------------------------


def test_vary_seed_sends_the_jobs_own_two_images_present_or_gone_from_the_form(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server(models=["tiny-random"])
    page = open_studio(server).page
    posts, refusals = watch_api(page)
    page.get_by_label("Prompt", exact=True).fill("image 1 in the colour of image 2")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    add_images(page, RED, BLUE)
    first = generate(page, posts)
    red, blue = png(WIDTH, HEIGHT, RED), png(WIDTH, HEIGHT, BLUE)
    assert sent_images(first) == [red, blue]

    varied = vary(page, posts)  # the images are still in the form: the happy path
    assert sent_images(varied) == [red, blue]
    job = latest_job(server)
    assert job["request"]["references"] == 2

    page.get_by_role("button", name="Remove image 2").click()  # the images leave the form ...
    page.get_by_role("button", name="Remove image 1").click()
    add_images(page, (30, 200, 30))  # ... and another takes their place
    expect(page.locator("#refs img")).to_have_count(1)
    again = vary(page, posts)  # the job's own two images come back, in their order
    assert sent_images(again) == [red, blue]
    expect(page.locator("#refs img")).to_have_count(2)
    expect(page.locator("#refs-note")).to_be_hidden()
    assert latest_job(server)["request"]["references"] == 2
    assert refusals == []


def test_after_a_reload_vary_seed_waits_for_the_two_images_and_sends_nothing_without_them(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server(models=["tiny-random"])
    studio = open_studio(server)
    page = studio.page
    posts, refusals = watch_api(page)
    page.get_by_label("Prompt", exact=True).fill("two to combine")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    add_images(page, RED, BLUE)
    generate(page, posts)
    jobs_before = len(server.http.get("/v1/jobs").json()["data"])

    reload_and_reopen(page, "two to combine")
    cards = page.locator("#refs li")
    expect(cards).to_have_count(2)  # a missing place for each of the job's images
    expect(cards.nth(0).locator(".ref-label")).to_have_text("image 1 · missing")
    expect(cards.nth(1).locator(".ref-label")).to_have_text("image 2 · missing")
    note = page.locator("#refs-note")
    expect(note).to_contain_text("This job used 2 reference images; this page no longer has images 1 and 2")
    expect(page.get_by_role("button", name="Go on without the missing images")).to_be_visible()
    studio.screenshot("studio-reopen-missing-images")

    page.get_by_role("button", name="Vary seed").click()
    refused_with(page, "no longer has images 1 and 2")  # the message stays, as an error
    expect(page.locator("#job-panel")).to_be_hidden()
    assert len(posts) == 1  # only the first job's: nothing was submitted

    add_images(page, RED)  # takes the first missing place
    expect(cards.nth(0).locator(".ref-label")).to_have_text("image 1")
    expect(note).to_contain_text("no longer has image 2")
    page.get_by_role("button", name="Generate").click()
    refused_with(page, "no longer has image 2")
    assert len(posts) == 1

    add_images(page, BLUE)
    expect(note).to_be_hidden()
    expect(page.get_by_role("button", name="Go on without the missing images")).to_be_hidden()
    sent = generate(page, posts)
    assert sent_images(sent) == [png(WIDTH, HEIGHT, RED), png(WIDTH, HEIGHT, BLUE)]
    assert latest_job(server)["request"]["references"] == 2

    reload_and_reopen(page, "two to combine")  # once more, and this time go on without them
    page.get_by_role("button", name="Go on without the missing images").click()
    expect(cards).to_have_count(0)
    expect(note).to_be_hidden()
    plain = generate(page, posts)
    assert plain.post_data_json["prompt"] == "two to combine"  # JSON, no image: as the form shows
    job = latest_job(server)
    assert job["request"]["references"] == 0
    assert len(server.http.get("/v1/jobs").json()["data"]) == jobs_before + 2
    assert refusals == []


def test_after_a_reload_a_klein_masked_edit_needs_its_mask_painted_again_or_dropped(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server(models=["tiny-random"])
    page = open_studio(server).page
    posts, refusals = watch_api(page)
    page.get_by_label("Prompt", exact=True).fill("a masked klein edit")
    add_images(page, RED, BLUE)
    drag(page, 0.4, 0.5, 0.6, 0.5)
    first = generate(page, posts)
    assert sent_mask_alpha(first).min() == 0

    reload_and_reopen(page, "a masked klein edit")
    add_images(page, RED, BLUE)
    note = page.locator("#refs-note")
    expect(note).to_contain_text("This job edited image 1 inside a mask, which this page no longer has")
    page.get_by_role("button", name="Vary seed").click()
    refused_with(page, "paint it again over image 1")
    assert len(posts) == 1  # the first job's only: not a plain generation from the two images

    page.get_by_role("button", name="Go on without the mask").click()  # said, not assumed
    expect(note).to_be_hidden()
    sent = generate(page, posts)
    body = sent.post_data_buffer
    assert body is not None
    assert b'name="mask"' not in body
    assert len(sent_images(sent)) == 2
    job = latest_job(server)
    assert (job["request"]["references"], job["request"]["mask"]) == (2, False)
    assert refusals == []


# -- FLUX.1: image 1 edited inside a mask ---------------------------------------------------------


def test_flux1_masked_edit_varies_with_its_image_and_mask_and_after_a_reload_waits_for_both(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server(models=[FLUX1])
    studio = open_studio(server)
    page = studio.page
    posts, refusals = watch_api(page)
    page.get_by_label("Prompt", exact=True).fill("a flux1 masked edit")
    add_images(page, RED)
    page.get_by_label("Brush size").fill("20")
    drag(page, 0.4, 0.5, 0.6, 0.5)
    first = generate(page, posts)
    red = png(WIDTH, HEIGHT, RED)
    mask = sent_mask_alpha(first)
    assert (mask.min(), mask.max()) == (0, 255)

    page.get_by_role("button", name="Remove image 1").click()  # image 1 and its mask leave the form
    expect(page.locator("#mask-field")).to_be_hidden()
    varied = vary(page, posts)  # both come back: the same edit, another seed
    assert sent_images(varied) == [red]
    assert np.abs(sent_mask_alpha(varied) - mask).max() <= 2
    job = latest_job(server)
    assert (job["request"]["mask"], job["request"]["references"]) == (True, 1)

    reload_and_reopen(page, "a flux1 masked edit")
    expect(page.locator("#refs li .ref-label")).to_have_text(["image 1 · missing"])
    page.get_by_role("button", name="Vary seed").first.click()
    refused_with(page, "no longer has image 1")
    assert len(posts) == 2  # neither a plain generation nor a strength-only edit

    add_images(page, RED)  # image 1 is back; its mask is not
    expect(page.locator("#mask-field")).to_be_visible()
    expect(page.get_by_label("Where I paint")).to_be_checked()
    expect(page.get_by_role("button", name="Go on without the mask")).to_be_hidden()  # FLUX.1 only edits
    page.get_by_role("button", name="Generate").click()
    refused_with(page, "inside a mask, which this page no longer has: paint it again")
    studio.screenshot("studio-reopen-flux1-mask")
    assert len(posts) == 2

    drag(page, 0.4, 0.5, 0.6, 0.5)
    expect(page.locator("#refs-note")).to_be_hidden()
    sent = generate(page, posts)
    assert sent_images(sent) == [red]
    assert sent_mask_alpha(sent).min() == 0
    job = latest_job(server)
    assert (job["status"], job["request"]["mask"]) == ("succeeded", True)
    assert refusals == []
