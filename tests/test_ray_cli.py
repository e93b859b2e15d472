"""``fluxserve serve --ray`` itself, as a user runs it: the command starts a local Ray, deploys the
model replica and the ingress on Serve's HTTP proxy at ``--port``, answers a generation through
it, and on Ctrl-C deletes the application and exits with 0. It is started with SIGINT ignored, as
a CI script's background job starts it: the command must still hear Ctrl-C (its own handler).

Its own module, so that its Ray is the only one on the machine while it runs (tests/test_ray_serve.py
starts another for its module). Skipped only where the ``ray`` extra is not installed.
"""

from __future__ import annotations

import base64
import io
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

pytest.importorskip("ray.serve")  # the one reason to skip: the extra is not installed

from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from tests.helpers import TEST_TIMEOUT, wait_for
from tests.postgres_support import Cluster
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

MODEL = "tiny-random-base"
STARTUP = TEST_TIMEOUT * 4
"""Ray's start, then a replica process that imports torch and loads the model: a minute on 2 cores."""


def test_serve_ray_deploys_answers_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, options: EngineOptions, cache_dir: Path, postgres_cluster: Cluster
) -> None:
    DiffusersEngine(MODEL, options).load()  # built in the cache, as a download would have put it there
    data_dir = tmp_path / "data"
    env = {"OMP_NUM_THREADS": "1", "FLUXSERVE_RAY_NUM_CPUS": "1", "FLUXSERVE_RAY_INGRESS_NUM_CPUS": "0.5"}
    url = postgres_cluster.create_database()
    server = ServerProcess(
        data_dir, cache_dir, [MODEL], database_url=url, extra_env=env, args=["--ray"], ignore_sigint=True
    )
    try:
        body = {"model": MODEL, "prompt": "through ray", "size": "64x64", "steps": 2, "response_format": "b64_json"}
        answers: list[httpx.Response] = []

        def routed() -> bool:
            if server.process.poll() is not None:
                raise AssertionError(f"serve --ray exited: {server.log.read_text()}")
            try:  # Serve's proxy listens first, and routes "/" once the application is deployed
                routes = httpx.get(f"{server.url}/-/routes", timeout=TEST_TIMEOUT)
            except httpx.TransportError:
                return False
            return routes.status_code == 200 and "/" in routes.json()  # a 503 while the proxy starts

        def generated() -> bool:
            answer = httpx.post(f"{server.url}/v1/images/generations", json=body, timeout=TEST_TIMEOUT)
            # 503 (with Retry-After) until the replica has loaded the model and published it
            assert answer.status_code in (200, 503), answer.text
            answers.append(answer)
            return answer.status_code == 200

        wait_for(routed, "serve --ray's application deployed", timeout=STARTUP)
        wait_for(generated, "a generation through serve --ray", timeout=STARTUP)
        assert all(answer.headers.get("retry-after") for answer in answers[:-1])
        [data] = answers[-1].json()["data"]
        image = Image.open(io.BytesIO(base64.b64decode(data["b64_json"])))
        assert (image.format, image.size) == ("PNG", (64, 64))

        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(STARTUP) == 0, server.log.read_text()
        assert "deleting the Ray Serve application" in server.log.read_text()
    finally:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGINT)
            try:
                server.process.wait(TEST_TIMEOUT)
            except subprocess.TimeoutExpired:
                server.kill()
