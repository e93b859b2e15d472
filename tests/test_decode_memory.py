"""The worst reference-image requests hold the server's memory within a bound (issue 13).

A real server process gets each request from three clients at once; its peak resident memory
(VmHWM, Linux) may rise only by what ``max_concurrent_decodes`` decodes of one 36-megapixel image,
scaled while it is decoded, can take. Before, the ten-image request alone raised it by gigabytes.
bench/decode_memory.py prints the same figures against the old way of decoding.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from bench.decode_memory import server_rise_mb, worst_requests

from tests.helpers import TEST_TIMEOUT
from tests.servers import ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc"),
]

BOUND_MB = {
    "ten": 100,  # refused from the request's fields: nothing is decoded
    "two": 400,  # two decodes at once of about 80 MB each, with room for the allocator's slack
}


@pytest.mark.parametrize("name", list(BOUND_MB))
def test_the_worst_image_requests_keep_memory_bounded(tmp_path: Path, cache_dir: Path, name: str) -> None:
    server = ServerProcess(tmp_path / "data", cache_dir, ["tiny-random"])
    try:
        server.wait_ready(TEST_TIMEOUT * 2)
        rise, statuses = server_rise_mb(server.url, server.process.pid, worst_requests()[name], TEST_TIMEOUT)
    finally:
        server.stop()
    assert statuses == [400, 400, 400]
    assert rise < BOUND_MB[name], f"the server's peak memory rose by {rise:.0f} MB"
