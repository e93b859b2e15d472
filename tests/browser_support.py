"""Headless Chromium (Debian's, driven by Playwright) against a real fluxserve on loopback.

Every page the tests open is confined to loopback: a request anywhere else is aborted and
recorded, and a test can assert that none was made. Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, Route, expect

from tests.helpers import TEST_TIMEOUT

CHROMIUM = "/usr/bin/chromium"
# As root in a sandbox: no sandbox, no GPU, and none of Chromium's own calls to Google's hosts.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
_LOOPBACK = re.compile(r"(https?://(127\.0\.0\.1|localhost)(:\d+)?/|data:|blob:|about:)")

# Every expect(...) waits as long as the rest of the suite may (Playwright's own default is 5 s,
# which a loaded machine outruns): one configurable timeout, FLUXSERVE_TEST_TIMEOUT.
expect.set_options(timeout=TEST_TIMEOUT * 1000)


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@dataclass
class StudioPage:
    """A browser tab on the studio, and every request it tried to make outside loopback."""

    page: Page
    base_url: str
    outside: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def studio_page(browser: Browser, base_url: str, *, width: int = 1280, height: int = 900) -> Iterator[StudioPage]:
    """A fresh browser profile (no stored key) with the studio open."""
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    opened = StudioPage(context.new_page(), base_url)

    def confine(route: Route) -> None:
        url = route.request.url
        if _LOOPBACK.match(url):
            route.continue_()
        else:
            opened.outside.append(url)
            route.abort()

    context.route("**/*", confine)
    try:
        opened.page.goto(base_url + "/")
        yield opened
    finally:
        context.close()
