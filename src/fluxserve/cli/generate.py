"""``fluxserve generate``: build a request, run the engine (local, or hosted: cf:/bfl:), write the files.

The settings (the environment, and ``--config``) bring the server's content filter and C2PA signer, built
and applied by the same code the server's worker uses (:mod:`fluxserve.wiring`, :func:`finish_result`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fluxserve import __version__
from fluxserve.engines.base import Engine, GenerationRequest, LoraChoice
from fluxserve.engines.base import Progress as StepProgress
from fluxserve.engines.diffusers_engine import DiffusersEngine
from fluxserve.engines.loading import EngineOptions
from fluxserve.engines.loras import LoraOptions
from fluxserve.engines.outputs import EncodedImage, finish_result
from fluxserve.engines.registry import create_engine
from fluxserve.engines.runtime import ModelRuntime
from fluxserve.engines.safety import ContentFilter
from fluxserve.engines.validation import parse_size, validate
from fluxserve.errors import InvalidPrompt, InvalidRequest
from fluxserve.imaging.credentials import ContentCredentials, Sign, reference_ingredients
from fluxserve.imaging.decode import decode_image
from fluxserve.imaging.encode import ImageFormat, check_compression
from fluxserve.imaging.png import encode_png
from fluxserve.prompts.structured import prompt_text
from fluxserve.settings import load_settings
from fluxserve.wiring import content_credentials, content_filter, provider_options


@dataclass(frozen=True)
class GenerateArgs:
    prompt: str | None
    json_prompt: Path | None
    references: list[Path]
    model: str
    size: str | None
    steps: int | None
    guidance: float | None
    seed: int | None
    n: int
    output_format: str | None
    compression: int | None
    output: str | None
    runtime: ModelRuntime
    cache_dir: Path
    allow_download: bool
    loras: tuple[LoraChoice, ...] = ()
    lora_dir: Path | None = None
    config: Path | None = None
    """A TOML file of settings (the server's): its content filter, C2PA signer and providers' credentials."""


@dataclass(frozen=True)
class Finishing:
    """What the settings ask of every output, as the server does it: judged, then signed."""

    content_filter: ContentFilter
    credentials: ContentCredentials | None

    def signer(self, model: str, references: list[Image.Image]) -> Sign | None:
        """Signs the images of ``model`` made from ``references`` (kept as PNG, as the server keeps them)."""
        if self.credentials is None:
            return None
        return self.credentials.signer(model, reference_ingredients([encode_png(image) for image in references]))


def parse_lora_flag(text: str) -> LoraChoice:
    """``NAME`` or ``NAME:SCALE`` (a repo id's ``org/name:file.safetensors`` keeps its colon)."""
    name, sep, scale = text.rpartition(":")
    if sep:
        try:
            return LoraChoice(name, float(scale))
        except ValueError:
            pass
    return LoraChoice(text, 1.0)


def _read_prompt(args: GenerateArgs) -> str:
    if (args.prompt is None) == (args.json_prompt is None):
        raise InvalidRequest("give a prompt or --json-prompt FILE (exactly one)", param="prompt")
    if args.json_prompt is None:
        return prompt_text(args.prompt)
    try:
        value: Any = json.loads(args.json_prompt.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidPrompt(f"cannot read --json-prompt {args.json_prompt}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidPrompt(f"--json-prompt {args.json_prompt} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidPrompt(f"--json-prompt {args.json_prompt} must hold a JSON object, not {type(value).__name__}")
    return prompt_text(value)


def _read_reference(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidRequest(f"cannot read --ref {path}: {error.strerror}", param="ref") from None
    return decode_image(data, param=f"--ref {path}")


def _is_folder(output: str) -> bool:
    return output.endswith(("/", "\\")) or Path(output).is_dir()


def _output_format(args: GenerateArgs) -> ImageFormat:
    from_name = None
    if args.output is not None and not _is_folder(args.output) and Path(args.output).suffix:
        from_name = ImageFormat.parse(Path(args.output).suffix[1:], param="--output")
    if args.output_format is None:
        return from_name or ImageFormat.PNG
    chosen = ImageFormat.parse(args.output_format, param="--format")
    if from_name is not None and from_name is not chosen:
        raise InvalidRequest(f"--format {chosen} does not match the output file name {args.output}", param="format")
    return chosen


def output_paths(output: str | None, fmt: ImageFormat, seeds: list[int]) -> list[Path]:
    """Where each image goes: a named file (numbered when several), or fresh names in a folder.

    A folder is a path ending in a slash or one that exists; a file name without an extension
    gets the format's.
    """
    if output is None or _is_folder(output):
        folder = Path(output or ".")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return [folder / f"fluxserve-{stamp}-{seed}.{fmt.extension}" for seed in seeds]
    path = Path(output)
    if not path.suffix:
        path = path.with_name(f"{path.name}.{fmt.extension}")
    if len(seeds) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i + 1}{path.suffix}") for i in range(len(seeds))]


def _build_request(args: GenerateArgs) -> GenerationRequest:
    size = parse_size(args.size) if args.size else None
    return GenerationRequest(
        prompt=_read_prompt(args),
        references=[_read_reference(path) for path in args.references],
        width=size[0] if size else None,
        height=size[1] if size else None,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        n=args.n,
        loras=args.loras,
    )


def run_generate(args: GenerateArgs) -> list[EncodedImage]:
    request = _build_request(args)
    fmt = _output_format(args)
    check_compression(args.compression, param="--compression")
    err = Console(stderr=True)
    # The settings come from the environment (FLUXSERVE_* or the providers' own names) and --config.
    settings = load_settings({"allow_download": None if args.allow_download else False}, config_file=args.config)
    finishing = Finishing(content_filter(settings), content_credentials(settings, __version__))
    finishing.content_filter.check_references(request.references, param="ref")  # before any model loads
    options = EngineOptions(
        cache_dir=args.cache_dir,
        allow_download=args.allow_download,
        runtime=args.runtime,
        loras=LoraOptions(directory=args.lora_dir, allow_download=args.allow_download),
    )
    engine = create_engine(args.model, options, provider_options(settings))
    try:
        return _generate(args, engine, request, fmt, err, finishing)
    finally:
        engine.close()


def _generate(
    args: GenerateArgs, engine: Engine, request: GenerationRequest, fmt: ImageFormat, err: Console, finishing: Finishing
) -> list[EncodedImage]:
    started = time.perf_counter()
    with err.status(f"loading {args.model}..."):
        engine.load()
    load_seconds = time.perf_counter() - started

    resolved = validate(request, engine.capabilities)  # errors before any bar is drawn
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("generating", total=None)

        def on_progress(step: StepProgress) -> None:
            bar.update(task, completed=step.step, total=step.total_steps)

        result = engine.generate(resolved, progress=on_progress)
    encoded = finish_result(  # a withheld image raises here: no file is written
        result,
        fmt,
        compression=args.compression,
        content_filter=finishing.content_filter,
        sign=finishing.signer(result.model, request.references),
    )
    paths = output_paths(args.output, fmt, result.seeds)
    for path, image in zip(paths, encoded, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.data)
        typer.echo(f"{path}\tseed {image.seed}")
    encode_seconds = sum(image.seconds for image in encoded)
    where = engine.device if isinstance(engine, DiffusersEngine) else engine.provider
    cost = "" if result.cost_usd is None else f", cost ${result.cost_usd:.4f}"
    typer.echo(
        f"{result.model} on {where}: {result.width}x{result.height}, {result.steps} steps{cost}, "
        f"load {load_seconds:.2f}s, generate {result.total_seconds:.2f}s, encode {encode_seconds:.3f}s"
    )
    return encoded
