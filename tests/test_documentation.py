"""The README documents every setting and every endpoint: an undocumented one fails here."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from fluxserve.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in Settings.model_fields if f"`{name}`" not in table]
    assert missing == []


def test_every_endpoint_is_in_the_readme(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    documented = {
        re.sub(r"\{[^}]+\}", "{}", path)
        for path in re.findall(r"(/v1/[\w/{}.-]*|/client/v4/[\w/{}.@-]*|/health|/ready)", README)
    }
    missing = [path for path in paths if re.sub(r"\{[^}]+\}", "{}", path) not in documented]
    assert missing == []
