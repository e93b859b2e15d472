"""The LoRA adapters a server can apply: names, where their files are, and which family each is for.

A client names an adapter; it never gives a path. A name resolves to one of:

- a ``.safetensors`` file inside ``lora_dir``: its path there without the suffix (``style``,
  ``people/alice``). Names cannot climb out (no ``..``, no absolute paths) and a symlink that
  points outside the folder is refused;
- a Hugging Face repository id, ``org/name`` (its ``pytorch_lora_weights.safetensors``) or
  ``org/name:weights.safetensors``: read from the Hugging Face cache, and downloaded only when the
  server allows downloads, exactly as models are.

The family (``flux.2`` or ``flux.1``) is read from the file's tensor names and shapes in the
safetensors header alone: no tensor is loaded and torch is not needed, so ``GET /v1/loras`` and
the checks made before a request is queued are cheap. A file whose keys do not say is listed with
no family; the engine checks every adapter against the loaded transformer before applying it.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fluxserve.defaults import LORA_CACHE_SIZE, LORA_HOTSWAP_RANK, LORA_SCALE_RANGE, MAX_LORAS_PER_REQUEST
from fluxserve.engines.base import LoraChoice
from fluxserve.errors import InvalidRequest

SUFFIX = ".safetensors"
HUB_DEFAULT_WEIGHTS = "pytorch_lora_weights.safetensors"
"""The file diffusers' ``save_lora_weights`` writes, and what a bare repo id means."""
MAX_HEADER_BYTES = 100 * 2**20
"""safetensors' own limit on the JSON header."""
MAX_NAME_CHARS = 300

_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.+ -]*"
_LOCAL_NAME = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_HUB_NAME = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?::([A-Za-z0-9_][\w./-]*\.safetensors))?"
)
_LORA_KEY = re.compile(r"lora_(?:A|B|up|down)\b|lora\.(?:up|down)\b|lokr_")

# Tensor names, with "_" read as ".", that only one family's transformer (or pipeline) has.
_FLUX2_MARKERS = re.compile(
    r"to\.qkv\.mlp\.proj|ff(?:\.context)?\.linear\.(?:in|out)|stream\.modulation"
    r"|single\.transformer\.blocks\.\d+\.attn\.to\.out"
)
_FLUX1_MARKERS = re.compile(
    r"proj\.mlp|ff(?:\.context)?\.net\.|norm1(?:\.context)?\.linear|img\.mod\.lin|txt\.mod\.lin"
    r"|single\.transformer\.blocks\.\d+\.(?:attn\.to\.[qkv]\.|norm\.linear)|single\.blocks\.\d+\.modulation"
    r"|^text\.encoder\.|^lora\.te\d?\."
)
_SINGLE_LINEAR1 = re.compile(r"single\.blocks\.\d+\.linear1\.(?:lora\.(?:up|b)|lora\.(?:down|a))\.weight$")
_TEXT_ENCODER = re.compile(r"^(?:text_encoder\.|lora_te\d?_)")


@dataclass(frozen=True)
class LoraOptions:
    """Where adapters come from and how many a request and a model may hold."""

    directory: Path | None = None
    allow_download: bool = False
    """Whether a repo id may be downloaded; otherwise only the Hugging Face cache is read."""
    max_per_request: int = MAX_LORAS_PER_REQUEST
    cache_size: int = LORA_CACHE_SIZE
    hotswap_rank: int = LORA_HOTSWAP_RANK
    """With compile on: the highest rank an adapter may have (adapters are hot-swapped into slots of this rank)."""
    hub_cache_dir: Path | None = None
    """The Hugging Face cache to read repo ids from (None: the hub library's own)."""


@dataclass(frozen=True)
class LoraFile:
    """An adapter file found for a name, and what its header says."""

    name: str
    path: Path
    family: str | None
    """``flux.2`` or ``flux.1``; None when its tensor names do not tell."""
    size: int
    modified_ns: int
    text_encoder: bool
    """Whether it also holds text-encoder weights (some FLUX.1 adapters do)."""

    @property
    def identity(self) -> tuple[str, int, int]:
        """What makes two loads the same adapter: the file, its size and when it last changed."""
        return str(self.path), self.size, self.modified_ns


def lora_family(model_family: str) -> str:
    """The adapter family of a model family key (``flux.2-klein`` -> ``flux.2``)."""
    return model_family.split("-", 1)[0]


def read_safetensors_keys(path: Path, name: str) -> dict[str, list[int]]:
    """The tensor names and shapes in a safetensors file's header, or :class:`InvalidRequest`."""
    try:
        with path.open("rb") as file:
            total = path.stat().st_size
            prefix = file.read(8)
            if len(prefix) < 8:
                raise ValueError("it is shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_HEADER_BYTES, total - 8):
                raise ValueError("its header length is past the end of the file")
            header = json.loads(file.read(length))
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidRequest(f"LoRA {name!r} is not a readable .safetensors file: {error}") from None
    if not isinstance(header, dict):
        raise InvalidRequest(f"LoRA {name!r} is not a readable .safetensors file: its header is not an object")
    shapes: dict[str, list[int]] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        shape = _int_list(entry.get("shape") if isinstance(entry, dict) else None)
        offsets = _int_list(entry.get("data_offsets") if isinstance(entry, dict) else None)
        if shape is None or offsets is None or len(offsets) != 2 or offsets[1] > total - 8 - length:
            raise InvalidRequest(f"LoRA {name!r} is not a readable .safetensors file: tensor {key!r} is malformed")
        shapes[key] = shape
    return shapes


def _int_list(value: object) -> list[int] | None:
    if isinstance(value, list) and all(isinstance(item, int) and item >= 0 for item in value):
        return value
    return None


def detect_family(shapes: dict[str, list[int]]) -> str | None:
    """``flux.2`` or ``flux.1`` from tensor names (and, for the original layout, a shape); None if unsure."""
    normalized = [_normalize(key) for key in shapes]
    flux2 = any(_FLUX2_MARKERS.search(key) for key in normalized)
    flux1 = any(_FLUX1_MARKERS.search(key) for key in normalized)
    if flux2 != flux1:
        return "flux.2" if flux2 else "flux.1"
    if flux2:
        return None
    return _family_from_linear1(dict(zip(normalized, shapes.values(), strict=True)))


def _normalize(key: str) -> str:
    for prefix in ("base_model.model.", "diffusion_model.", "transformer.", "lora_unet_"):
        key = key.removeprefix(prefix)
    return key.replace("_", ".").lower()


def _family_from_linear1(shapes: dict[str, list[int]]) -> str | None:
    """The original layout's fused single-block projection: 9x the width on FLUX.2, 7x on FLUX.1."""
    up = next((shape for key, shape in shapes.items() if _SINGLE_LINEAR1.search(key) and ".up." in key), None)
    up = up or next((s for k, s in shapes.items() if _SINGLE_LINEAR1.search(k) and ".b." in k), None)
    down = next((s for k, s in shapes.items() if _SINGLE_LINEAR1.search(k) and (".down." in k or ".a." in k)), None)
    if not up or not down or len(down) < 2 or down[1] == 0:
        return None
    ratio = up[0] / down[1]
    return {9.0: "flux.2", 7.0: "flux.1"}.get(ratio)


def check_lora_file(path: Path, name: str) -> LoraFile:
    """Read ``path``'s header: a LoRA, its family and whether it touches the text encoder."""
    shapes = read_safetensors_keys(path, name)
    if not any(_LORA_KEY.search(key) for key in shapes):
        raise InvalidRequest(f"LoRA {name!r} holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up tensors)")
    stat = path.stat()
    return LoraFile(
        name=name,
        path=path,
        family=detect_family(shapes),
        size=stat.st_size,
        modified_ns=stat.st_mtime_ns,
        text_encoder=any(_TEXT_ENCODER.match(key) for key in shapes),
    )


class LoraCatalog:
    """Resolves adapter names to checked files; lists what ``lora_dir`` holds. Thread-safe (no state
    but a cache of headers read, keyed by file identity)."""

    def __init__(self, options: LoraOptions) -> None:
        self.options = options
        self._headers: dict[tuple[str, int, int], LoraFile] = {}

    def available(self, allowed: Collection[str] | None = None) -> list[LoraFile]:
        """Every readable adapter in ``lora_dir``, by name (files that are not LoRAs are left out);
        only those named in ``allowed`` when it is given (a caller's allow-list: no other file is read)."""
        directory = self.options.directory
        if directory is None or not directory.is_dir():
            return []
        found = []
        for path in sorted(directory.rglob(f"*{SUFFIX}")):
            name = path.relative_to(directory).as_posix().removesuffix(SUFFIX)
            if allowed is not None and name not in allowed:
                continue
            try:
                found.append(self._local(name, "loras"))
            except InvalidRequest:
                continue
        return found

    def resolve(self, name: str, param: str, allowed: Collection[str] | None = None) -> LoraFile:
        """The file ``name`` means, checked, or :class:`InvalidRequest` naming ``param`` (whose
        list of what exists names only adapters in ``allowed``, when given)."""
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
            raise InvalidRequest(f"a LoRA name is text of 1-{MAX_NAME_CHARS} characters", param=param)
        try:
            local = self._local_path(name)
            if local is not None:
                return self._checked(local, name)
            hub = _HUB_NAME.fullmatch(name)
            if hub is not None:
                return self._checked(self._hub_path(name, hub.group(1), hub.group(2) or HUB_DEFAULT_WEIGHTS), name)
        except InvalidRequest as error:
            raise InvalidRequest(str(error), param=param) from None
        raise InvalidRequest(f"unknown LoRA {name!r}; {self._what_exists(allowed)}", param=param)

    def check(
        self,
        choices: Sequence[LoraChoice],
        family: str | None,
        *,
        model: str,
        allowed: Collection[str] | None = None,
    ) -> list[LoraFile]:
        """Check a request's adapters for a model of ``family`` (its Capabilities.lora_family).

        ``allowed``: the names the caller may use (its key's allow-list, which the caller checks
        first); an unknown name's message then lists only those."""
        if not choices:
            return []
        if family is None:
            raise InvalidRequest(f"{model} takes no LoRA adapters; omit loras", param="loras")
        if len(choices) > self.options.max_per_request:
            raise InvalidRequest(
                f"{len(choices)} LoRA adapters sent; this server applies at most {self.options.max_per_request} "
                "per request",
                param="loras",
            )
        files = []
        for index, choice in enumerate(choices):
            param = f"loras[{index}].name"
            found = self.resolve(choice.name, param, allowed)
            if found.family is not None and found.family != family:
                raise InvalidRequest(
                    f"LoRA {choice.name!r} is a {found.family.upper()} adapter; {model} is a {family.upper()} model",
                    param=param,
                )
            files.append(found)
        return files

    def _local_path(self, name: str) -> Path | None:
        directory = self.options.directory
        if directory is None or not _LOCAL_NAME.fullmatch(name) or name.endswith(":"):
            return None
        base = directory.resolve()
        candidate = directory / (name if name.endswith(SUFFIX) else name + SUFFIX)
        if not candidate.is_file():
            return None
        real = candidate.resolve()
        if not real.is_relative_to(base):
            raise InvalidRequest(f"LoRA {name!r} points outside lora_dir; it is not served")
        return real

    def _local(self, name: str, param: str) -> LoraFile:
        path = self._local_path(name)
        if path is None:
            raise InvalidRequest(f"unknown LoRA {name!r}", param=param)
        return self._checked(path, name)

    def _checked(self, path: Path, name: str) -> LoraFile:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        found = self._headers.get(key)
        if found is None:
            found = check_lora_file(path, name)
            self._headers[key] = found
        return found if found.name == name else replace(found, name=name)

    def _hub_path(self, name: str, repo_id: str, filename: str) -> Path:
        from huggingface_hub import constants, hf_hub_download

        offline = not self.options.allow_download or constants.HF_HUB_OFFLINE
        try:
            cache = None if self.options.hub_cache_dir is None else str(self.options.hub_cache_dir)
            return Path(hf_hub_download(repo_id, filename, cache_dir=cache, local_files_only=offline))
        except Exception as error:
            why = "downloads are off" if offline else f"the download failed: {type(error).__name__}"
            raise InvalidRequest(
                f"LoRA {name!r} ({repo_id}, {filename}) is not in the Hugging Face cache and {why}; "
                f"the server's operator can fetch it with `hf download {repo_id} {filename}`"
            ) from None

    def _what_exists(self, allowed: Collection[str] | None) -> str:
        names = [found.name for found in self.available(allowed)]
        if names:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            return f"available: {shown} (GET /v1/loras)"
        return "this server has no lora_dir adapters (GET /v1/loras); name a Hugging Face repo id (org/name)"


def check_scales(choices: Sequence[LoraChoice]) -> None:
    """Each scale a finite number in :data:`LORA_SCALE_RANGE`; no adapter named twice."""
    low, high = LORA_SCALE_RANGE
    seen: set[str] = set()
    for index, choice in enumerate(choices):
        scale = choice.scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not low <= scale <= high:
            raise InvalidRequest(
                f"loras[{index}].scale must be a number from {low:g} to {high:g}, not {scale!r}",
                param=f"loras[{index}].scale",
            )
        if choice.name in seen:
            raise InvalidRequest(f"LoRA {choice.name!r} is named twice", param=f"loras[{index}].name")
        seen.add(choice.name)
