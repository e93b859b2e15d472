"""The runtime flags ``generate`` and ``serve`` share: how a local model runs.

Each flag left out is ``None``: ``generate`` then takes the default, ``serve`` the settings
(config file, environment). A bad value is one line naming the flag.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError

from fluxserve.defaults import DTYPES, OFFLOADS, QUANTIZATIONS, STEP_CACHES
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.errors import InvalidRequest
from fluxserve.settings import RuntimeFields, gguf_mismatch

_TEXT_ENCODER_QUANTIZATIONS = tuple(q for q in QUANTIZATIONS if q != "gguf")
_CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": DTYPES,
    "offload": OFFLOADS,
    "quantize_transformer": QUANTIZATIONS,
    "quantize_text_encoder": _TEXT_ENCODER_QUANTIZATIONS,
    "step_cache": STEP_CACHES,
}


def _listed(choices: tuple[str, ...]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


Device = Annotated[str | None, typer.Option(help="cuda, cuda:1, mps or cpu (default: best available).")]
Dtype = Annotated[str | None, typer.Option(help=f"{_listed(DTYPES)} (default: per device).")]
Offload = Annotated[str | None, typer.Option(help="none, model or sequential: CPU offload for small GPUs.")]
QuantizeTransformer = Annotated[
    str | None,
    typer.Option("--quantize-transformer", help=f"The transformer's weights: {_listed(QUANTIZATIONS)}."),
]
QuantizeTextEncoder = Annotated[
    str | None,
    typer.Option(
        "--quantize-text-encoder", help=f"The text encoder's weights: {_listed(_TEXT_ENCODER_QUANTIZATIONS)}."
    ),
]
GgufFile = Annotated[
    str | None,
    typer.Option(
        "--gguf-file",
        help="With --quantize-transformer gguf: a local .gguf file, or repo_id/file.gguf.",
        metavar="FILE",
    ),
]
StepCache = Annotated[str | None, typer.Option("--step-cache", help=f"{_listed(STEP_CACHES)}.")]
Compile = Annotated[
    bool | None,
    typer.Option("--compile/--no-compile", help="torch.compile the transformer's repeated blocks at warm-up."),
]
Attention = Annotated[
    str | None, typer.Option(help="A diffusers attention backend: native, flash, sage... (default: the library's).")
]
PromptCacheMb = Annotated[
    float | None, typer.Option("--prompt-cache-mb", help="MiB of prompt embeddings kept for reuse (0: off).")
]
MemoryGb = Annotated[
    float | None,
    typer.Option(
        "--memory-gb", help="Device memory (GiB) the load-time memory plan checks against (default: CUDA's free)."
    ),
]


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def runtime_overrides(**given: Any) -> dict[str, Any]:
    """The runtime flags given (``None``: left out), checked one by one."""
    values = {name: value for name, value in given.items() if value is not None}
    for name, value in values.items():
        choices = _CHOICES.get(name)
        if choices is not None and value not in choices:
            raise InvalidRequest(f"{_flag(name)} must be {_listed(choices)}, not {value!r}", param=name)
    try:
        RuntimeFields.model_validate(values)
    except ValidationError as error:
        detail = error.errors(include_url=False)[0]
        name = str(detail["loc"][0])
        raise InvalidRequest(f"{_flag(name)}: {detail['msg']}", param=name) from None
    return values


def model_runtime(**given: Any) -> ModelRuntime:
    """One model's runtime from the flags alone (``generate``): each left out takes its default."""
    values = RuntimeFields.model_validate(runtime_overrides(**given)).model_dump()
    mismatch = gguf_mismatch(values)
    if mismatch is not None:
        why = (
            "--quantize-transformer gguf needs --gguf-file"
            if mismatch[0] == "gguf_file"
            else "--gguf-file needs --quantize-transformer gguf"
        )
        raise InvalidRequest(why, param=mismatch[0])
    return ModelRuntime(**values)
