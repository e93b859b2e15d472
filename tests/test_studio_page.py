"""The studio page as served: offline assets, its security policy, and a first look in Chromium."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from fluxserve.accounts.keys import KEY_FORMAT
from tests.browser_support import studio_page
from tests.jobs_support import LiveServer

pytestmark = pytest.mark.slow


def test_the_page_and_its_assets_are_served_from_the_package_under_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    _, secret = client.app.state.services.keys.create("studio")  # type: ignore[attr-defined]
    again = client.get("/", headers={"authorization": f"Bearer {secret}"})
    assert KEY_FORMAT.search(again.text) is None  # the server never writes a key into the page
    script = client.get("/studio/studio.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    for bad in ("/studio/../routes.py", "/studio/studio.exe", "/studio/missing.js"):
        assert client.get(bad).status_code == 404


def test_the_page_loads_in_chromium_with_nothing_from_outside_loopback(server: LiveServer, browser: Any) -> None:
    with studio_page(browser, server.url) as opened:
        errors: list[str] = []
        opened.page.on("pageerror", lambda error: errors.append(str(error)))
        opened.page.wait_for_load_state("networkidle")
        assert opened.page.title() == "fluxserve studio"
        opened.screenshot("studio-loaded")
        assert errors == []
        assert opened.outside == []
