"""The studio page (issue 7) end to end: headless Chromium against a real fluxserve on loopback.

Each test drives the page as a person would (labels, roles and the ids the page documents),
checks what the server recorded through the API, and saves a screenshot of the state it reached
under test-artifacts/screenshots/. No request leaves loopback.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import FilePayload, Page, expect

from tests.browser_support import StudioPage
from tests.helpers import PREFER_WAIT, TEST_TIMEOUT
from tests.jobs_support import LiveServer

pytestmark = pytest.mark.slow

# No skip when Chromium is missing: scripts/test installs it (scripts/setup-browser), and a browser
# test that quietly does not run would pass for the wrong reason.

TIMEOUT = TEST_TIMEOUT * 1000
"""Playwright's bound on every wait, in milliseconds."""


def png(width: int = 96, height: int = 96, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def record_progress(page: Page) -> None:
    """Keep every aria-valuenow the progress bar shows, in window.progressSeen."""
    page.evaluate(
        """() => {
            window.progressSeen = [];
            const bar = document.getElementById("progress");
            new MutationObserver(() => window.progressSeen.push(
                [Number(bar.getAttribute("aria-valuenow")), Number(bar.getAttribute("aria-valuemax"))]
            )).observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
        }"""
    )


def latest_job(server: LiveServer) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = server.http.get("/v1/jobs?limit=1").json()["data"]
    return jobs[0]


# -- generate, progress, result, download -------------------------------------------------------


def test_generate_follows_progress_to_the_end_and_downloads_the_image(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    studio = open_studio(server)
    page = studio.page
    studio.screenshot("studio-empty")

    page.get_by_label("Model").select_option("tiny-random-base")
    expect(page.locator("#guidance-field")).to_be_visible()
    expect(page.locator("#steps")).to_be_enabled()
    page.get_by_label("Prompt", exact=True).fill("a red fox in fresh snow")
    page.get_by_label("Width").fill("256")
    page.get_by_label("Height").fill("256")
    page.get_by_label("Steps").fill("12")
    page.get_by_label("Guidance").fill("3.5")
    page.get_by_label("Format").select_option("webp")
    record_progress(page)
    page.get_by_role("button", name="Generate").click()

    progress = page.get_by_role("progressbar")
    expect(progress).to_have_attribute("aria-valuenow", "12")
    expect(progress).to_have_attribute("aria-valuemax", "12")
    expect(page.locator("#job-status")).to_contain_text("Done")
    seen = page.evaluate("window.progressSeen")
    steps = [now for now, total in seen if total == 12]
    assert steps == sorted(steps), seen
    assert len(steps) >= 6, seen
    assert steps[-1] == 12, seen

    job = latest_job(server)
    assert job["status"] == "succeeded"
    expected = {"prompt": "a red fox in fresh snow", "width": 256, "height": 256, "steps": 12}
    assert job["request"] | expected == job["request"]
    assert job["request"]["guidance"] == 3.5
    assert job["request"]["output_format"] == "webp"
    seed = job["images"][0]["seed"]
    image = page.locator("#results img").first
    expect(image).to_be_visible()
    assert page.evaluate("(img) => img.complete && img.naturalWidth", image.element_handle()) == 256
    expect(page.locator("#results .seed-value").first).to_have_text(str(seed))
    expect(page.locator("#seed")).to_have_value(str(seed))
    studio.screenshot("studio-result")

    with page.expect_download() as info:
        page.get_by_role("link", name="Download").first.click()
    download = info.value
    assert download.suggested_filename == f"fluxserve-{seed}.webp"
    data = download.path().read_bytes()
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"
    assert Image.open(io.BytesIO(data)).size == (256, 256)
    assert studio.outside == []


def test_step_distilled_model_fixes_steps_and_hides_guidance_and_unlocked_seeds_change(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    page = open_studio(server).page
    page.get_by_label("Model").select_option("tiny-random")
    expect(page.locator("#steps")).to_be_disabled()
    expect(page.locator("#steps")).to_have_value("4")
    expect(page.locator("#guidance-field")).to_be_hidden()
    page.get_by_role("radio", name=re.compile("16:9")).check(force=True)
    expect(page.locator("#width")).to_have_value("1360")
    expect(page.locator("#height")).to_have_value("768")
    page.get_by_label("Width").fill("1000")
    page.get_by_label("Width").blur()
    expect(page.locator("#width")).to_have_value("1008")  # snapped to the nearest multiple of 16
    expect(page.locator("#size-info")).to_contain_text("MP")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_label("Prompt", exact=True).fill("a lighthouse")

    seeds = []
    for _ in range(2):
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#job-status")).to_contain_text("Done")
        seeds.append(latest_job(server)["request"]["seed"])
    assert seeds[0] != seeds[1]
    assert "steps" in latest_job(server)["request"]


# -- errors ---------------------------------------------------------------------------------------


def test_api_error_is_shown_next_to_the_control_it_names(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    studio = open_studio(server)
    page = studio.page
    page.get_by_label("Prompt", exact=True).fill("x" * 10_001)  # the server's limit is 10,000
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_role("button", name="Generate").click()
    error = page.locator("#prompt-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("the limit is 10000")
    expect(page.locator("#prompt")).to_have_attribute("aria-invalid", "true")
    assert "{" not in error.inner_text()
    expect(page.locator("#message")).to_be_hidden()
    studio.screenshot("studio-error")


# -- keys -----------------------------------------------------------------------------------------


def test_key_is_asked_for_checked_kept_in_the_browser_and_forgotten(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    _, secret = server.service.keys.create("alice")
    studio = open_studio(server)
    page = studio.page
    key_error = page.locator("#key-error")
    expect(key_error).to_contain_text("needs an API key")

    page.get_by_label("API key").fill("fsk_" + "x" * 48)
    page.get_by_role("button", name="Use key").click()
    expect(key_error).to_contain_text("not valid")
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    studio.screenshot("studio-wrong-key")

    page.get_by_label("API key").fill(secret)
    page.get_by_role("button", name="Use key").click()
    expect(key_error).to_be_hidden()
    expect(page.locator("#model option")).to_have_count(2)
    assert page.evaluate("localStorage.getItem('fluxserve.studio.apiKey')") == secret
    assert secret not in page.content()

    page.get_by_label("Model").select_option("tiny-random")
    page.get_by_label("Prompt", exact=True).fill("a key-holder's fox")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results img")).to_have_count(1)
    jobs = server.http.get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"}).json()["data"]
    assert [job["request"]["prompt"] for job in jobs] == ["a key-holder's fox"]

    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#history li")).to_have_count(1)  # the saved key was used at once
    page.get_by_role("button", name="Forget key").click()
    assert page.evaluate("localStorage.getItem('fluxserve.studio.apiKey')") is None
    expect(key_error).to_contain_text("needs an API key")
    assert studio.outside == []


# -- cancel ---------------------------------------------------------------------------------------


def test_cancel_stops_a_running_job(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    studio = open_studio(server)
    page = studio.page
    page.get_by_label("Model").select_option("tiny-random-base")
    page.get_by_label("Prompt", exact=True).fill("a slow fox")
    page.get_by_label("Width").fill("256")
    page.get_by_label("Height").fill("256")
    page.get_by_label("Steps").fill("100")
    page.get_by_label("Number of images").fill("3")
    page.get_by_role("button", name="Generate").click()

    expect(page.locator("#job-status")).to_contain_text("Step")
    cancel = page.get_by_role("button", name="Cancel", exact=True)
    expect(cancel).to_be_visible()
    studio.screenshot("studio-running")
    cancel.click()
    expect(page.locator("#job-status")).to_contain_text("Canceled")
    expect(cancel).to_be_hidden()
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    job = latest_job(server)
    assert job["status"] == "canceled"
    now = int(page.get_by_role("progressbar").get_attribute("aria-valuenow") or 0)
    assert 0 < now < 300
    expect(page.locator("#results img")).to_have_count(0)
    studio.screenshot("studio-canceled")


# -- history --------------------------------------------------------------------------------------


def test_history_lists_jobs_pages_on_and_reopens_one_with_its_settings(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    wait = {"headers": PREFER_WAIT}
    chosen = server.submit(
        {
            "model": "tiny-random-base",
            "prompt": "the one to reopen",
            "width": 128,
            "height": 96,
            "steps": 7,
            "guidance": 2.5,
            "seed": 4242,
            "n": 2,
            "output_format": "jpeg",
            "response_format": "url",
        },
        **wait,
    )
    for index in range(21):
        server.submit({"model": "tiny-random", "prompt": f"filler {index}", "size": "64x64"}, **wait)

    studio = open_studio(server)
    page = studio.page
    history = page.locator("#history li")
    expect(history).to_have_count(20)
    page.get_by_role("button", name="Load more").click()
    expect(history).to_have_count(22)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    studio.screenshot("studio-history")

    page.get_by_role("button", name=re.compile("the one to reopen")).click()
    expect(page.locator("#prompt")).to_have_value("the one to reopen")
    expect(page.locator("#model")).to_have_value("tiny-random-base")
    expect(page.locator("#width")).to_have_value("128")
    expect(page.locator("#height")).to_have_value("96")
    expect(page.locator("#steps")).to_have_value("7")
    expect(page.locator("#guidance")).to_have_value("2.5")
    expect(page.locator("#seed")).to_have_value("4242")
    expect(page.locator("#seed-lock")).to_be_checked()
    expect(page.locator("#n")).to_have_value("2")
    expect(page.locator("#output-format")).to_have_value("jpeg")
    expect(page.locator("#results img")).to_have_count(2)
    expect(page.locator("#results .seed-value")).to_have_text(["4242", "4243"])
    studio.screenshot("studio-reopened")

    page.get_by_role("button", name="Generate").click()  # the same settings again: the same job request
    expect(page.locator("#job-status")).to_contain_text("Done")
    again = latest_job(server)
    keep = ("prompt", "width", "height", "steps", "guidance", "seed", "n", "output_format")
    assert {k: again["request"][k] for k in keep} == {k: chosen["request"][k] for k in keep}
    expect(history).to_have_count(23)


# -- JSON prompts ---------------------------------------------------------------------------------


def test_json_mode_validates_as_typed_shows_swatches_and_generates(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    studio = open_studio(server)
    page = studio.page
    page.get_by_role("button", name="JSON", exact=True).click()
    expect(page.get_by_role("button", name="JSON", exact=True)).to_have_attribute("aria-pressed", "true")
    prompt = page.get_by_label("Prompt", exact=True)
    error = page.locator("#prompt-error")

    prompt.fill('{"scene": "a quiet harbour"}')
    expect(error).to_have_text("invalid structured prompt: prompt.subjects is required")
    prompt.fill('{"scene": "a quiet harbour", "subjects": [{"description": "a boat"}], "color_palette": ["#12345G"]}')
    expect(error).to_contain_text("prompt.color_palette[0]: '#12345G' is not a valid hex colour")
    expect(page.locator("#palette .swatch.invalid")).to_have_count(1)
    studio.screenshot("studio-json-invalid")

    page.get_by_role("button", name="Insert starter template").click()
    expect(error).to_be_hidden()
    expect(page.locator("#json-status")).to_contain_text("Valid")
    expect(page.locator("#palette .swatch:not(.invalid)")).to_have_count(2)
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results img")).to_have_count(1)
    sent = json.loads(latest_job(server)["request"]["prompt"])
    assert sent["scene"] == "a rainy street market at night"
    assert sent["color_palette"][0] == "#FF6B35"
    studio.screenshot("studio-json")


# -- reference images -----------------------------------------------------------------------------


def test_references_from_picker_and_drop_reorder_and_generate(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    studio = open_studio(server)
    page = studio.page
    page.get_by_label("Model").select_option("tiny-random")
    page.locator("#refs-input").set_input_files(
        [
            FilePayload(name="red.png", mimeType="image/png", buffer=png(colour=(220, 30, 30))),
            FilePayload(name="green.png", mimeType="image/png", buffer=png(colour=(30, 220, 30))),
        ]
    )
    page.evaluate(
        """async (bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "blue.png", { type: "image/png" }));
            const drop = new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true });
            document.getElementById("refs-drop").dispatchEvent(drop);
        }""",
        list(png(colour=(30, 30, 220))),
    )
    refs = page.locator("#refs img")
    expect(refs).to_have_count(3)
    page.get_by_role("button", name="Move image 3 earlier").click()
    expect(refs.nth(1)).to_have_attribute("alt", re.compile("blue.png"))
    expect(refs.nth(2)).to_have_attribute("alt", re.compile("green.png"))

    page.locator("#refs-input").set_input_files(
        [
            FilePayload(name="notes.txt", mimeType="text/plain", buffer=b"not an image"),
            FilePayload(name="huge.png", mimeType="image/png", buffer=b"\0" * (20 * 1024 * 1024 + 1)),
        ]
    )
    expect(page.locator("#refs-error")).to_contain_text("notes.txt is not a PNG, JPEG, WebP or GIF image")
    expect(page.locator("#refs-error")).to_contain_text("huge.png is 20.0 MB; the limit is 20 MB")
    expect(refs).to_have_count(3)
    studio.screenshot("studio-references")

    page.get_by_label("Prompt", exact=True).fill("the colour of image 2 on the shape of image 1")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results img")).to_have_count(1)
    job = latest_job(server)
    assert job["request"]["references"] == 3
    assert job["usage"]["input_megapixels"] > 0


# -- small screens --------------------------------------------------------------------------------


def test_phone_layout_has_no_horizontal_scroll(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    studio = open_studio(server, width=390, height=844)
    page = studio.page
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.get_by_label("Prompt", exact=True).fill("a fox on a phone")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results img")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    studio.screenshot("studio-phone")


# -- after a result: vary seed, use as reference, settings as code --------------------------------


def test_result_varies_its_seed_becomes_a_reference_and_shows_its_settings_as_code(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    page = open_studio(server).page
    page.get_by_label("Model").select_option("tiny-random")
    page.get_by_label("Prompt", exact=True).fill("a paper boat")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_label("Seed", exact=True).fill("77")
    expect(page.locator("#seed-lock")).to_be_checked()  # typing a seed locks it
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#results .seed-value")).to_have_text(["77"])

    page.get_by_text("Settings as code").click()
    code = page.locator("#results pre")
    expect(code).to_contain_text("/v1/images/generations")
    expect(code).to_contain_text('"seed": 77')
    expect(code).to_contain_text("$FLUXSERVE_KEY")
    page.get_by_role("button", name="Copy as Python").click()
    expect(code).to_contain_text("client.images.generate(")
    expect(code).to_contain_text('extra_body={"seed": 77}')

    page.get_by_role("button", name="Use as reference").click()
    expect(page.locator("#refs img")).to_have_count(1)

    page.get_by_role("button", name="Vary seed").click()
    expect(page.locator("#results .seed-value")).not_to_have_text(["77"])
    varied = latest_job(server)
    assert varied["status"] == "succeeded"
    assert varied["request"]["seed"] != 77
    assert varied["request"]["prompt"] == "a paper boat"
    assert varied["request"]["references"] == 1


def test_queue_position_is_shown_while_waiting_behind_another_job(
    make_server: Callable[..., LiveServer], open_studio: Callable[..., StudioPage]
) -> None:
    server = make_server()
    page = open_studio(server).page
    ahead = server.submit({"model": "tiny-random-base", "prompt": "ahead", "size": "256x256", "steps": 100, "n": 3})
    page.get_by_label("Model").select_option("tiny-random-base")
    page.get_by_label("Prompt", exact=True).fill("behind")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_label("Steps").fill("2")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_contain_text("Queued: position 1")
    server.http.post(f"/v1/jobs/{ahead['id']}/cancel")
    expect(page.locator("#job-status")).to_contain_text("Done")
    expect(page.locator("#results img")).to_have_count(1)
