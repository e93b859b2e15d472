"""Nothing imports upward: settings imports no engine, engines no settings, jobs no webhooks.

Each check imports a module in a fresh interpreter and looks at what came with it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported_with(module: str) -> set[str]:
    script = f"import sys, {module}; print('\\n'.join(name for name in sys.modules if name.startswith('fluxserve')))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("fluxserve.settings", ("fluxserve.engines", "fluxserve.jobs", "fluxserve.webhooks", "fluxserve.api")),
        ("fluxserve.engines.registry", ("fluxserve.settings", "fluxserve.jobs", "fluxserve.api")),
        ("fluxserve.jobs.service", ("fluxserve.webhooks", "fluxserve.api")),
        ("fluxserve.webhooks.sender", ("fluxserve.jobs.service", "fluxserve.jobs.worker", "fluxserve.api")),
    ],
)
def test_a_module_does_not_import_upward(module: str, forbidden: tuple[str, ...]) -> None:
    found = sorted(name for name in imported_with(module) if name.startswith(forbidden))
    assert found == []
