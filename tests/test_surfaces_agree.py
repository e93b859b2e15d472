"""One request through every API surface fluxserve speaks: the same seed makes the same image bytes.

Each surface is one entry of SURFACES: a function that sends the request in its wire format and
returns the PNG it got back. A new surface is one more entry.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import replicate

from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, wait_for
from tests.jobs_support import JOBS, LiveServer

PROMPT, SIDE, SEED = "a lighthouse at dusk", 64, 21


def openai_images(server: LiveServer) -> bytes:
    body = {"model": "tiny-random", "prompt": PROMPT, "size": f"{SIDE}x{SIDE}", "seed": SEED, "output_format": "png"}
    answer = server.http.post("/v1/images/generations", json=body)
    assert answer.status_code == 200, answer.text
    return base64.b64decode(answer.json()["data"][0]["b64_json"])


def jobs_api(server: LiveServer) -> bytes:
    body = {"model": "tiny-random", "prompt": PROMPT, "width": SIDE, "height": SIDE, "seed": SEED}
    job = server.submit(body, headers=PREFER_WAIT)
    assert job["status"] == "succeeded", job
    return httpx.get(job["images"][0]["url"], timeout=TEST_TIMEOUT).content


def bfl(server: LiveServer) -> bytes:
    body = {"prompt": PROMPT, "width": SIDE, "height": SIDE, "seed": SEED, "output_format": "png"}
    task = server.http.post("/v1/flux-2-pro", json=body).json()
    polls: list[dict[str, Any]] = []
    wait_for(lambda: polls.append(server.http.get(task["polling_url"]).json()) or polls[-1]["status"] != "Pending")
    assert polls[-1]["status"] == "Ready", polls[-1]
    return httpx.get(polls[-1]["result"]["sample"], timeout=TEST_TIMEOUT).content


def workers_ai(server: LiveServer) -> bytes:
    fields = {"prompt": PROMPT, "width": str(SIDE), "height": str(SIDE), "seed": str(SEED)}
    answer = server.http.post(
        "/client/v4/accounts/any/ai/run/@cf/black-forest-labs/flux-2-dev",
        files={name: (None, value) for name, value in fields.items()},
    )
    assert answer.status_code == 200, answer.text
    return base64.b64decode(answer.json()["result"]["image"])


def replicate_client(server: LiveServer) -> bytes:
    client = replicate.Client(api_token="r8_unused-on-loopback", base_url=server.url, timeout=TEST_TIMEOUT)
    inputs = {"prompt": PROMPT, "aspect_ratio": "custom", "width": SIDE, "height": SIDE, "seed": SEED}
    try:
        output = client.run("black-forest-labs/flux-2-dev", input={**inputs, "output_format": "png"})
    finally:
        client._client.close()
    assert isinstance(output, str), output
    return httpx.get(output, timeout=TEST_TIMEOUT).content


SURFACES: dict[str, Callable[[LiveServer], bytes]] = {
    "openai": openai_images,
    "jobs": jobs_api,
    "bfl": bfl,
    "workers-ai": workers_ai,
    "replicate": replicate_client,
}


def test_every_surface_makes_the_same_image_for_the_same_seed(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(models=["tiny-random"])  # flux-2-pro and flux-2-dev are aliases of it
    images = {name: send(server) for name, send in SURFACES.items()}
    assert images["openai"].startswith(b"\x89PNG")
    different = [name for name, image in images.items() if image != images["openai"]]
    assert not different, f"these surfaces made other bytes: {different}"
    assert len(server.http.get(JOBS, params={"limit": 100}).json()["data"]) == len(SURFACES)
