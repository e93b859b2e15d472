"""The studio's LoRA adapter picker in Chromium, against a real fluxserve with tiny real adapters in
its lora_dir (tests/lora_files.py): pick adapters for the chosen model's family, with scales in the
server's range and no more than its number per request; the request, the job, the result, the
history and the settings as code all carry them; a refusal from the server shows as the studio's
errors do."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import FilePayload, Page, expect

from fluxserve.accounts.keys import Scope
from fluxserve.api.app import create_app
from fluxserve.engines.base import Engine
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.loras import LoraOptions
from fluxserve.engines.registry import create_engine
from fluxserve.imaging.encode import read_parameters
from fluxserve.settings import Settings
from tests.browser_support import StudioPage
from tests.helpers import MAX_WAIT, TEST_TIMEOUT
from tests.jobs_support import LiveServer
from tests.servers import serve_in_thread

pytestmark = pytest.mark.slow

TIMEOUT = TEST_TIMEOUT * 1000
MODELS = ["tiny-random", "tiny-random-flux1"]  # a FLUX.2 [klein] and a FLUX.1 model
MAX_LORAS = 2  # not the default (3): the page follows the server's number
HOSTED = "cf:flux-2-dev"


@pytest.fixture(scope="module")
def lora_engines(options: EngineOptions, lora_dir: Path) -> Iterator[dict[str, DiffusersEngine]]:
    """Engines of their own, so the session's shared engines never hold an adapter."""
    loras = LoraOptions(directory=lora_dir, max_per_request=MAX_LORAS)
    made = {name: DiffusersEngine(name, EngineOptions(options.cache_dir, False, loras=loras)) for name in MODELS}
    for engine in made.values():
        engine.load()
    yield made
    for engine in made.values():
        engine.close()


def serve(
    stack: contextlib.ExitStack, data_dir: Path, cache_dir: Path, lora_dir: Path, engines: dict[str, Engine]
) -> LiveServer:
    settings = Settings(
        data_dir=data_dir,
        cache_dir=cache_dir,
        models=list(engines),
        warmup=False,
        allow_download=False,
        lora_dir=lora_dir,
        max_loras_per_request=MAX_LORAS,
        max_wait_seconds=MAX_WAIT,
    )
    app = create_app(settings, engines)
    return stack.enter_context(LiveServer(app, stack.enter_context(serve_in_thread(app))))


@pytest.fixture
def lora_server(
    tmp_path: Path, cache_dir: Path, lora_dir: Path, lora_engines: dict[str, DiffusersEngine]
) -> Iterator[LiveServer]:
    with contextlib.ExitStack() as stack:
        yield serve(stack, tmp_path / "data", cache_dir, lora_dir, dict(lora_engines))


@pytest.fixture
def studio(open_studio: Callable[[LiveServer], StudioPage], lora_server: LiveServer) -> StudioPage:
    return open_studio(lora_server)


def start(page: Page, prompt: str, model: str = "tiny-random") -> None:
    page.get_by_label("Model").select_option(model)
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")


def pick(page: Page, name: str, scale: str | None = None) -> None:
    page.get_by_label("Adapter to add").select_option(name)
    page.get_by_role("button", name="Add adapter").click()
    if scale is not None:
        page.get_by_label(f"Scale of {name}").fill(scale)


def offered(page: Page) -> list[str]:
    values: list[str] = page.locator("#lora-choice option").evaluate_all("(options) => options.map((o) => o.value)")
    return values


def generate(page: Page) -> Any:
    """Press Generate; the request the page sends to POST /v1/jobs."""
    is_job = lambda request: request.method == "POST" and request.url.endswith("/v1/jobs")  # noqa: E731
    with page.expect_request(is_job) as sent:
        page.get_by_role("button", name="Generate").click()
    return sent.value


def form_field(body: bytes, content_type: str, name: str) -> bytes:
    """The bytes of form field ``name`` in a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if f'name="{name}"'.encode() in head:
            return data.removesuffix(b"\r\n")
    raise AssertionError(f"no {name} field in the form")


def jobs_of(server: LiveServer, key: str | None = None) -> list[dict[str, Any]]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    data: list[dict[str, Any]] = server.http.get("/v1/jobs", headers=headers).json()["data"]
    return data


def png(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(out, "PNG")
    return out.getvalue()


def test_an_adapter_and_its_scale_go_to_the_job_and_show_in_results_history_and_code(
    lora_server: LiveServer, studio: StudioPage
) -> None:
    page = studio.page
    start(page, "a styled fox")
    pick(page, "style", "0.8")
    studio.screenshot("studio-loras")
    sent = generate(page)
    assert sent.post_data_json["loras"] == [{"name": "style", "scale": 0.8}]
    expect(page.locator("#results img")).to_have_count(1)
    expect(page.locator("#results .result-loras")).to_have_text(" · LoRA style 0.8")

    styled = jobs_of(lora_server)[0]
    assert styled["request"]["loras"] == [{"name": "style", "scale": 0.8}]
    image = lora_server.http.get(styled["images"][0]["url"]).content
    assert read_parameters(image)["loras"] == [{"name": "style", "scale": 0.8}]  # type: ignore[index]
    history = page.locator("#history li")
    expect(history.first.locator(".history-loras")).to_have_text("LoRA style 0.8")

    page.get_by_text("Settings as code").click()
    code = page.locator("#results pre")
    expect(code).to_contain_text('"loras": [')
    expect(code).to_contain_text('"name": "style"')
    page.get_by_role("button", name="Copy as Python").click()
    expect(code).to_contain_text('"loras": [{"name": "style", "scale": 0.8}]')
    studio.screenshot("studio-loras-result")

    page.get_by_role("button", name="Remove style").click()
    expect(page.locator("#loras li")).to_have_count(0)
    page.get_by_label("Prompt", exact=True).fill("a plain fox")
    assert "loras" not in generate(page).post_data_json
    expect(history).to_have_count(2)
    expect(history.first.locator(".history-loras")).to_have_count(0)
    assert "loras" not in jobs_of(lora_server)[0]["request"]

    page.get_by_role("button", name=re.compile("a styled fox")).click()  # reopen: its adapter comes back
    expect(page.locator("#loras li")).to_have_count(1)
    expect(page.get_by_label("Scale of style")).to_have_value("0.8")
    expect(page.locator("#results .result-loras")).to_have_text(" · LoRA style 0.8")
    page.get_by_role("button", name="Vary seed").click()
    expect(history).to_have_count(3)
    varied = jobs_of(lora_server)[0]
    assert varied["request"]["loras"] == [{"name": "style", "scale": 0.8}]
    assert varied["request"]["seed"] != styled["request"]["seed"]


def test_the_picker_offers_the_models_family_up_to_the_servers_number_and_scale_range(
    lora_server: LiveServer, studio: StudioPage
) -> None:
    listing = lora_server.http.get("/v1/loras").json()
    models = {
        card["id"]: card["capabilities"]["lora_family"] for card in lora_server.http.get("/v1/models").json()["data"]
    }
    assert models == {"tiny-random": "flux.2", "tiny-random-flux1": "flux.1"}
    for_family = {
        family: [card["id"] for card in listing["data"] if card["family"] in (family, None)]
        for family in ("flux.2", "flux.1")
    }
    assert ("style" in for_family["flux.2"], "style" in for_family["flux.1"]) == (True, False)
    assert ("flux1-style" in for_family["flux.1"], "flux1-style" in for_family["flux.2"]) == (True, False)

    page = studio.page
    start(page, "a fox in ink")
    expect(page.locator("#loras-limit")).to_have_text(f"(up to {MAX_LORAS})")
    assert offered(page) == for_family["flux.2"]
    expect(page.locator("#loras-info")).to_contain_text("1 adapter for FLUX.1 not shown")
    pick(page, "style")
    pick(page, "ink")
    assert offered(page) == [name for name in for_family["flux.2"] if name not in ("style", "ink")]
    expect(page.get_by_role("button", name="Add adapter")).to_be_disabled()
    expect(page.get_by_label("Adapter to add")).to_be_disabled()
    expect(page.locator("#loras-info")).to_contain_text(f"At most {MAX_LORAS} adapters per request")

    scale = page.get_by_label("Scale of ink")
    expect(scale).to_have_attribute("min", str(int(listing["min_scale"])))
    expect(scale).to_have_attribute("max", str(int(listing["max_scale"])))
    scale.fill("2.5")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#loras-error")).to_contain_text("The scale of ink must be a number from -2 to 2")
    assert jobs_of(lora_server) == []  # refused in the page: nothing sent

    scale.fill("-0.5")
    page.locator("#refs-input").set_input_files([FilePayload(name="blue.png", mimeType="image/png", buffer=png())])
    sent = generate(page)  # with a reference image the page sends a multipart form
    form = sent.post_data_buffer
    assert form is not None
    expected = [{"name": "style", "scale": 1}, {"name": "ink", "scale": -0.5}]
    assert json.loads(form_field(form, sent.all_headers()["content-type"], "loras")) == expected
    expect(page.locator("#results img")).to_have_count(1)
    expect(page.locator("#loras-error")).to_be_hidden()
    job = jobs_of(lora_server)[0]
    assert (job["request"]["loras"], job["request"]["references"]) == (expected, 1)
    expect(page.locator("#results .result-loras")).to_have_text(" · LoRA style 1, ink -0.5")
    page.get_by_text("Settings as code").click()
    page.get_by_role("button", name="Copy as Python").click()  # an edit's form takes the list as JSON text
    expect(page.locator("#results pre")).to_contain_text(
        '"loras": "[{\\"name\\":\\"style\\",\\"scale\\":1},{\\"name\\":\\"ink\\",\\"scale\\":-0.5}]"'
    )

    page.get_by_role("button", name="Remove ink").click()
    expect(page.get_by_role("button", name="Add adapter")).to_be_enabled()
    page.get_by_label("Model").select_option("tiny-random-flux1")  # style is a FLUX.2 adapter
    expect(page.locator("#loras li")).to_have_count(0)
    expect(page.locator("#loras-info")).to_contain_text("Removed style: not for FLUX.1 models like tiny-random-flux1.")
    assert offered(page) == for_family["flux.1"]
    pick(page, "flux1-style", "0.6")
    page.get_by_label("Prompt", exact=True).fill("an old photo")
    # FLUX.1 uses the kept image 1 only to edit it (a mask or a strength): the page says so, and
    # sends nothing until it is used or removed (never a plain generation the server refuses)
    expect(page.locator("#refs-note")).to_contain_text("uses image 1 only to edit it")
    page.get_by_role("button", name="Remove image 1").click()
    expect(page.locator("#refs-note")).to_be_hidden()
    assert generate(page).post_data_json["loras"] == [{"name": "flux1-style", "scale": 0.6}]
    expect(page.locator("#results .result-loras")).to_have_text(" · LoRA flux1-style 0.6")


def test_the_servers_refusals_show_as_the_studios_errors(lora_server: LiveServer, studio: StudioPage) -> None:
    _, admin = lora_server.services.keys.create("root", Scope.ADMIN)
    made = lora_server.http.post(
        "/v1/admin/keys",
        json={"name": "flux1 only", "loras": ["flux1-style"]},
        headers={"authorization": f"Bearer {admin}"},
    )
    assert made.status_code == 201, made.text
    limited = made.json()["key"]
    page = studio.page

    def use_key(secret: str) -> None:
        page.get_by_label("API key").fill(secret)
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("#key-error")).to_be_hidden()

    use_key(admin)
    expect(page.locator("#lora-choice option[value=misfit]")).to_have_count(1)
    start(page, "a misfit")
    pick(page, "misfit")  # its file names no family: listed for both, and the model refuses it
    generate(page)
    expect(page.locator("#job-status")).to_have_text("Failed.")
    expect(page.locator("#message")).to_contain_text("does not fit tiny-random")

    page.get_by_role("button", name="Remove misfit").click()
    pick(page, "ink", "0.5")
    use_key(limited)  # this key may use flux1-style alone
    info = page.locator("#loras-info")
    expect(info).to_contain_text("None of the server's adapters fits tiny-random, a FLUX.2 model: they are for FLUX.1.")
    expect(page.get_by_role("button", name="Add adapter")).to_be_disabled()
    expect(page.locator("#loras li")).to_contain_text("not in the server's list for you")  # kept: the server decides
    page.get_by_label("Prompt", exact=True).fill("not allowed")
    sent = generate(page)
    assert sent.post_data_json["loras"] == [{"name": "ink", "scale": 0.5}]
    error = page.locator("#loras-error")
    expect(error).to_contain_text("This API key may not use the LoRA adapter 'ink'; it may use flux1-style")
    expect(page.get_by_label("Adapter to add")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#message")).to_be_hidden()
    assert jobs_of(lora_server, limited) == []
    studio.screenshot("studio-loras-refused")

    page.get_by_role("button", name="Remove ink").click()
    expect(error).to_be_hidden()
    generate(page)
    expect(page.locator("#results img")).to_have_count(1)
    assert [job["request"].get("loras") for job in jobs_of(lora_server, limited)] == [None]


def test_a_model_that_takes_no_adapters_says_so_and_drops_those_picked(
    tmp_path: Path,
    cache_dir: Path,
    lora_dir: Path,
    lora_engines: dict[str, DiffusersEngine],
    open_studio: Callable[[LiveServer], StudioPage],
) -> None:
    # A hosted model: configured, and never called (nothing is generated with it).
    providers = ProviderOptions(cloudflare_account_id="acct", cloudflare_api_token="token")
    hosted = create_engine(HOSTED, EngineOptions(cache_dir, False), providers)
    with contextlib.ExitStack() as stack:
        stack.callback(hosted.close)
        server = serve(
            stack, tmp_path / "data", cache_dir, lora_dir, {"tiny-random": lora_engines["tiny-random"], HOSTED: hosted}
        )
        assert server.http.get(f"/v1/models/{HOSTED}").json()["capabilities"]["lora_family"] is None
        page = open_studio(server).page
        start(page, "a harbour")
        pick(page, "style", "0.7")
        page.get_by_label("Model").select_option(HOSTED)
        expect(page.locator("#loras li")).to_have_count(0)
        expect(page.locator("#loras-info")).to_have_text(f"Removed style. {HOSTED} takes no LoRA adapters.")
        expect(page.get_by_role("button", name="Add adapter")).to_be_disabled()
        page.get_by_label("Model").select_option("tiny-random")
        expect(page.locator("#loras-info")).not_to_contain_text("Removed")
        expect(page.get_by_role("button", name="Add adapter")).to_be_enabled()
