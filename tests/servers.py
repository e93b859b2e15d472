"""Real servers for the tests: the app under uvicorn on loopback, in a thread or a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from fluxserve.api.server import server_config
from fluxserve.settings import Settings


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
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``fluxserve serve`` as a child process, for tests that kill it."""

    def __init__(self, data_dir: Path, cache_dir: Path, models: list[str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "fluxserve", "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        for model in models:
            command += ["--model", model]
        env = {**os.environ, "FLUXSERVE_CACHE_DIR": str(cache_dir), "FLUXSERVE_WARMUP": "false"}
        env["FLUXSERVE_ALLOW_DOWNLOAD"] = "false"
        self.log = data_dir.parent / f"server-{self.port}.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready in {timeout} s: {self.log.read_text()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
