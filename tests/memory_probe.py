"""Measure one model's peak process memory while it generates, for the memory-plan tests.

Run in a fresh process: ``python -m tests.memory_probe FOLDER WIDTH HEIGHT WARMUP_FOLDER``. Prints JSON with
the resident memory before loading, and the peak (VmHWM) while generating one image, the peak
having been reset after loading (``/proc/self/clear_refs``) so that the load's transients
(files read while building the model) are not counted.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def main(folder: str, width: int, height: int, warmup: str) -> None:
    import torch

    from fluxserve.engines.base import GenerationRequest
    from fluxserve.engines.diffusers_engine import DiffusersEngine
    from fluxserve.engines.loading import EngineOptions

    torch.set_num_threads(2)
    options = EngineOptions(cache_dir=Path(tempfile.gettempdir()), allow_download=False)
    # First a tiny model of the same classes: the libraries' lazily imported modules and
    # one-time initialisations are then in the baseline, not in the model's figure.
    warm = DiffusersEngine(warmup, options)
    warm.load()
    warm.generate(GenerationRequest("warm up", width=width, height=height, seed=1))
    del warm
    gc.collect()
    before = _status("VmRSS")
    engine = DiffusersEngine(folder, options)
    engine.load()
    gc.collect()
    loaded = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    engine.generate(GenerationRequest("a lighthouse on a cliff at dusk", width=width, height=height, seed=1))
    peak = _status("VmHWM")
    print(json.dumps({"before": before, "loaded": loaded, "peak": peak}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
