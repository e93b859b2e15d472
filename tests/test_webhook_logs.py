"""Webhook URLs in logs: origins only, in httpx's lines too; the filter comes with a sender's start, not an import.

A real delivery's log lines are checked in test_webhooks.py."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import httpx

from fluxserve.webhooks.logs import SEND_THREAD_PREFIX, OriginsOnly, hide_urls_in_httpx_logs, origin
from tests.helpers import TEST_TIMEOUT

URL = httpx.URL("https://hooks.example.com:8443/fluxserve?token=abc")


def httpx_record() -> logging.LogRecord:
    """A record as httpx writes one per request."""
    args = ("POST", URL, "HTTP/1.1", 200, "OK")
    return logging.LogRecord("httpx", logging.INFO, __file__, 1, 'HTTP Request: %s %s "%s %d %s"', args, None)


def filtered_on(thread_name: str) -> str:
    record = httpx_record()
    thread = threading.Thread(target=OriginsOnly().filter, args=(record,), name=thread_name)
    thread.start()
    thread.join()
    return record.getMessage()


def test_an_origin_drops_the_path_and_query() -> None:
    assert origin(URL) == "https://hooks.example.com:8443"
    assert origin("http://[::1]:8080/x?secret=1") == "http://[::1]:8080"
    assert origin("http://a\x00b/") == "(an invalid URL)"


def test_httpx_lines_show_only_the_origin_on_sender_threads() -> None:
    expected = 'HTTP Request: POST https://hooks.example.com:8443 "HTTP/1.1 200 OK"'
    assert filtered_on(f"{SEND_THREAD_PREFIX}0") == expected
    assert "token=abc" in filtered_on("some-other-thread")


def test_the_filter_is_installed_once() -> None:
    hide_urls_in_httpx_logs()
    hide_urls_in_httpx_logs()

    assert sum(isinstance(each, OriginsOnly) for each in logging.getLogger("httpx").filters) == 1


def test_importing_webhooks_installs_nothing() -> None:
    script = (
        "import importlib, logging, pkgutil, fluxserve.webhooks as package\n"
        "for module in pkgutil.iter_modules(package.__path__):\n"
        "    importlib.import_module(f'fluxserve.webhooks.{module.name}')\n"
        "import fluxserve.api.app\n"
        "print(len(logging.getLogger('httpx').filters))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=TEST_TIMEOUT * 4
    )
    assert done.stdout.strip() == "0"
