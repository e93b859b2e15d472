"""Real servers for the tests: the app under uvicorn on loopback, in a thread or a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from fluxserve.api.server import server_config
from fluxserve.settings import Settings
from tests.helpers import MAX_WAIT, TEST_TIMEOUT, wait_for


@contextmanager
def serve_in_thread(app: FastAPI, sock: socket.socket | None = None) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port (or on ``sock``, bound to one); yield its base URL."""
    context = getattr(app.state, "context", None)  # a fluxserve app carries its settings; a fake provider's does not
    settings: Settings = context.settings if context is not None else Settings()
    config = server_config(
        app, settings, host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    sockets = None if sock is None else [sock]
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), "the test server started")
    if not server.started:
        raise RuntimeError("the test server did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(TEST_TIMEOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


LEASE_SECONDS = 5.0
"""The test servers' job leases: renewed every third of it, so a busy machine does not lose one."""


class ServerProcess:
    """``fluxserve serve`` as a child process, for tests that kill it."""

    def __init__(
        self,
        data_dir: Path,
        cache_dir: Path,
        models: list[str],
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        database_url: str | None = None,
        args: list[str] | None = None,
        ignore_sigint: bool = False,
    ) -> None:
        """``extra_env``: more environment variables (settings as ``FLUXSERVE_<NAME>``); ``args``: more
        command-line arguments for ``fluxserve serve``; ``ignore_sigint``: start it with SIGINT ignored,
        as a background job of a non-interactive shell (a CI script's) starts its children."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "fluxserve", "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        for model in models:
            command += ["--model", model]
        command += args or []
        env = {**os.environ, "FLUXSERVE_CACHE_DIR": str(cache_dir), "FLUXSERVE_WARMUP": "false"}
        env["FLUXSERVE_ALLOW_DOWNLOAD"] = "false"
        env["FLUXSERVE_MAX_WAIT_SECONDS"] = str(MAX_WAIT)
        # A killed server's jobs go back to a shared (Postgres) queue once their leases run out: soon.
        env["FLUXSERVE_LEASE_SECONDS"] = str(LEASE_SECONDS)
        env.pop("FLUXSERVE_DATABASE_URL", None)
        env.update(extra_env or {})
        if database_url is not None:
            env["FLUXSERVE_DATABASE_URL"] = database_url
        self.log = data_dir.parent / f"server-{self.port}.log"
        with self.log.open("ab") as log:
            ignoring = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=ignoring)

    def wait_ready(self, timeout: float = TEST_TIMEOUT * 2) -> None:
        """Wait for ``/ready`` (the default bound allows for building the models)."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()}")
            try:
                return httpx.get(f"{self.url}/ready", timeout=TEST_TIMEOUT / 6).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_for(ready, f"{self.url}/ready", timeout=timeout)
        except AssertionError as error:
            raise RuntimeError(f"{error}: {self.log.read_text()}") from None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(TEST_TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TEST_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
