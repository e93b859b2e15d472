"""Schema-driven fuzzing: schemathesis sends what the OpenAPI description allows, and more.

No generated request may produce a 5xx. The server runs on loopback with a small output budget
so that the valid requests it generates stay quick.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from tests.helpers import TEST_TIMEOUT
from tests.servers import serve_in_thread


def test_openapi_document_describes_every_endpoint(make_app: Callable[..., FastAPI]) -> None:
    schema = make_app().openapi()
    paths = schema["paths"]
    for path in (
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/models",
        "/v1/models/{model_id}",
        "/health",
        "/ready",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/cancel",
    ):
        assert path in paths, path
    assert "/v1/images/files/{job_id}/{name}" in paths
    body = paths["/v1/images/generations"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    json_fields = set(body["application/json"]["schema"]["properties"])
    assert {"prompt", "n", "size", "seed", "steps", "guidance", "images", "input_image", "quality"} <= json_fields
    form_fields = set(body["multipart/form-data"]["schema"]["properties"])
    assert {"image", "image[]", "input_image_0", "input_image_1", "mask"} <= form_fields


def test_fuzzing_the_api_finds_no_server_error(make_app: Callable[..., FastAPI], tmp_path: Path) -> None:
    app = make_app(models=["tiny-random"], max_output_megapixels=0.25)
    with serve_in_thread(app) as url:
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "--seed",
            "20261122",
            "--request-timeout",
            str(TEST_TIMEOUT),
            "--no-color",
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=TEST_TIMEOUT * 15, cwd=tmp_path, check=False
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
