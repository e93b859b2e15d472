"""The ``fluxserve`` command line. Commands parse arguments and call the library; nothing more."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fluxserve import __version__
from fluxserve.cli import runtime_flags as flags
from fluxserve.cli.generate import GenerateArgs, parse_lora_flag, run_generate
from fluxserve.cli.keys import NewKeyArgs, create_key, list_keys, print_usage, revoke_key
from fluxserve.cli.loras import print_loras
from fluxserve.cli.models import print_models, print_served
from fluxserve.cli.plan import PlanArgs, run_plan
from fluxserve.cli.serve import run_on_ray, run_server
from fluxserve.defaults import DEFAULT_MODEL, default_cache_dir
from fluxserve.errors import FluxserveError, InvalidRequest
from fluxserve.imaging.c2pa_certificates import make_test_certificates
from fluxserve.settings import Settings, load_settings

app = typer.Typer(
    name="fluxserve",
    help="A self-hosted server for FLUX image models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fluxserve {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """A self-hosted server for FLUX image models."""


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="What to draw. Omit it when using --json-prompt.")] = None,
    json_prompt: Annotated[
        Path | None,
        typer.Option("--json-prompt", help="A structured prompt: a file holding one JSON object.", metavar="FILE"),
    ] = None,
    ref: Annotated[
        list[Path] | None,
        typer.Option("--ref", help="A reference image (PNG, JPEG, WebP, GIF). Repeat for several.", metavar="IMAGE"),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Short name, Hugging Face repo id, or local folder.")
    ] = DEFAULT_MODEL,
    size: Annotated[
        str | None, typer.Option("--size", help="Output size WIDTHxHEIGHT, e.g. 1024x768.", metavar="WxH")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the model's).")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance scale, for models that use it.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the first image (default: random).")] = None,
    n: Annotated[int, typer.Option("-n", help="Number of images; image i uses seed + i.")] = 1,
    output_format: Annotated[
        str | None, typer.Option("--format", "-f", help="png, jpeg or webp (default: from -o, else png).")
    ] = None,
    compression: Annotated[
        int | None, typer.Option(help="0-100: JPEG/WebP quality loss, or PNG effort (default: fast).")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Output file, or a folder (ending in / or existing).", metavar="PATH"),
    ] = None,
    device: flags.Device = None,
    dtype: flags.Dtype = None,
    offload: flags.Offload = None,
    quantize_transformer: flags.QuantizeTransformer = None,
    quantize_text_encoder: flags.QuantizeTextEncoder = None,
    gguf_file: flags.GgufFile = None,
    step_cache: flags.StepCache = None,
    compile_blocks: flags.Compile = None,
    attention: flags.Attention = None,
    prompt_cache_mb: flags.PromptCacheMb = None,
    memory_gb: flags.MemoryGb = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(envvar="FLUXSERVE_CACHE_DIR", help="Where tiny models are built. [default: ~/.cache/fluxserve]"),
    ] = None,
    offline: Annotated[bool, typer.Option(help="Never download weights.")] = False,
    lora: Annotated[
        list[str] | None,
        typer.Option(
            "--lora",
            help="A LoRA adapter in --lora-dir (or a Hugging Face repo id), with an optional scale: "
            "NAME or NAME:SCALE. Repeat to combine.",
            metavar="NAME[:SCALE]",
        ),
    ] = None,
    lora_dir: Annotated[
        Path | None, typer.Option(envvar="FLUXSERVE_LORA_DIR", help="A folder of LoRA .safetensors files.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="The server's TOML settings: its content filter and C2PA signing apply here too.",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Generate images from a text or JSON prompt and optional reference images.

    The content filter (content_filter*) and C2PA signing (c2pa_cert_file, c2pa_key_file) follow the
    settings, from the environment or --config, as on the server."""
    runtime = flags.model_runtime(
        device=device,
        dtype=dtype,
        offload=offload,
        quantize_transformer=quantize_transformer,
        quantize_text_encoder=quantize_text_encoder,
        gguf_file=gguf_file,
        step_cache=step_cache,
        compile=compile_blocks,
        attention=attention,
        prompt_cache_mb=prompt_cache_mb,
        memory_gb=memory_gb,
    )
    args = GenerateArgs(
        prompt=prompt,
        json_prompt=json_prompt,
        references=list(ref or []),
        model=model,
        size=size,
        steps=steps,
        guidance=guidance,
        seed=seed,
        n=n,
        output_format=output_format,
        compression=compression,
        output=output,
        runtime=runtime,
        cache_dir=cache_dir or default_cache_dir(),
        allow_download=not offline,
        loras=tuple(parse_lora_flag(text) for text in lora or []),
        lora_dir=lora_dir,
        config=config,
    )
    run_generate(args)


@app.command()
def serve(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help=f"A model to serve (repeat for several). Default: {DEFAULT_MODEL}."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help=f"Address to listen on (default {Settings.model_fields['host'].default}).")
    ] = None,
    port: Annotated[int | None, typer.Option(help=f"Port (default {Settings.model_fields['port'].default}).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where jobs and images are kept.", metavar="DIR")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML file of settings (see the README).", metavar="FILE")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never download weights.")] = False,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Serve without API keys even on a network address (logs a warning)."),
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Postgres for the jobs: postgresql://USER:PASS@HOST/DB.", metavar="URL"),
    ] = None,
    on_ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Deploy on Ray Serve (the 'ray' extra): model replicas and HTTP ingress replicas over Postgres.",
        ),
    ] = False,
    device: flags.Device = None,
    dtype: flags.Dtype = None,
    offload: flags.Offload = None,
    quantize_transformer: flags.QuantizeTransformer = None,
    quantize_text_encoder: flags.QuantizeTextEncoder = None,
    gguf_file: flags.GgufFile = None,
    step_cache: flags.StepCache = None,
    compile_blocks: flags.Compile = None,
    attention: flags.Attention = None,
    prompt_cache_mb: flags.PromptCacheMb = None,
    memory_gb: flags.MemoryGb = None,
) -> None:
    """Run the HTTP server (OpenAI Images API) until interrupted.

    The runtime flags (--device ... --prompt-cache-mb) set every model's default; a model's own
    [runtime."NAME"] table in the config file still wins."""
    runtime = flags.runtime_overrides(
        device=device,
        dtype=dtype,
        offload=offload,
        quantize_transformer=quantize_transformer,
        quantize_text_encoder=quantize_text_encoder,
        gguf_file=gguf_file,
        step_cache=step_cache,
        compile=compile_blocks,
        attention=attention,
        prompt_cache_mb=prompt_cache_mb,
        memory_gb=memory_gb,
    )
    overrides = {
        "models": model or None,
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "database_url": database_url,
        **runtime,
    }
    if offline:
        overrides["allow_download"] = False
    if no_auth:
        overrides["no_auth"] = True
    settings = load_settings(overrides, config_file=config)
    if on_ray:
        run_on_ray(settings)
    else:
        run_server(settings)


keys_app = typer.Typer(help="Create, list and revoke API keys; report usage.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="The server's data directory (default: as `serve` uses).", metavar="DIR"),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="The server's TOML settings, to find its database.", metavar="FILE"),
]


def _settings(data_dir: Path | None, config: Path | None) -> Settings:
    """The server's settings: they say where its database is (database_url, else the data dir)."""
    return load_settings({"data_dir": data_dir}, config_file=config)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    scope: Annotated[str, typer.Option(help="generate, or admin (may also manage keys).")] = "generate",
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests that make a job, per minute.")] = None,
    quota_mp: Annotated[
        float | None, typer.Option("--quota-mp", help="Input + output megapixels per --per period.")
    ] = None,
    per: Annotated[str | None, typer.Option("--per", help="The quota's period: day or month (UTC).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Jobs queued or running at once.")] = None,
    expires: Annotated[
        str | None, typer.Option(help="A date (2027-01-31, midnight UTC), an ISO date-time, or 30d / 12h.")
    ] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option(
            "--lora", help="Limit the key to this LoRA adapter (repeat for more; default: all).", metavar="NAME"
        ),
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Create a key and print it once (only its hash is kept)."""
    args = NewKeyArgs(name, scope, rpm, quota_mp, per, concurrency, expires, None if lora is None else tuple(lora))
    create_key(_settings(data_dir, config), args)


@keys_app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """List the keys (never the keys themselves: their prefixes)."""
    list_keys(_settings(data_dir, config), as_json=as_json)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id (key_...), prefix (fsk_ + 8) or name.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Revoke a key; the server refuses it from its next request."""
    revoke_key(_settings(data_dir, config), key)


@keys_app.command("usage")
def keys_usage(
    key: Annotated[str | None, typer.Option("--key", help="Only this key (id, prefix or name).")] = None,
    days: Annotated[int, typer.Option(help="Today and the days before it.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Usage per day (UTC), key and model: jobs, images, steps and megapixels of succeeded jobs."""
    print_usage(_settings(data_dir, config), reference=key, days=days, as_json=as_json)


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    served: Annotated[
        bool, typer.Option("--served", help="The models the settings serve, with each one's configured runtime.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="The server's TOML settings (implies --served).", metavar="FILE")
    ] = None,
) -> None:
    """List the models fluxserve knows by name and what each needs (or, --served, what a server runs)."""
    if served or config is not None:
        print_served(load_settings(config_file=config), as_json=as_json)
    else:
        print_models(as_json=as_json)


@app.command()
def plan(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Short name, Hugging Face repo id, or local folder.")
    ] = DEFAULT_MODEL,
    quantize_transformer: flags.QuantizeTransformer = None,
    quantize_text_encoder: flags.QuantizeTextEncoder = None,
    gguf_file: flags.GgufFile = None,
    offload: flags.Offload = None,
    device: flags.Device = None,
    dtype: flags.Dtype = None,
    memory_gb: Annotated[
        float | None,
        typer.Option("--memory-gb", help="Plan for a GPU with this much memory (GiB) instead of this machine's."),
    ] = None,
    size: Annotated[str, typer.Option("--size", help="The image size to plan for.", metavar="WxH")] = "1024x1024",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(envvar="FLUXSERVE_CACHE_DIR", help="Where tiny models are built. [default: ~/.cache/fluxserve]"),
    ] = None,
) -> None:
    """Estimate a model's peak memory for one image, and which quantization and offload would fit."""
    args = PlanArgs(
        model=model,
        runtime=flags.model_runtime(
            quantize_transformer=quantize_transformer,
            quantize_text_encoder=quantize_text_encoder,
            gguf_file=gguf_file,
            offload=offload,
            device=device,
            dtype=dtype,
            memory_gb=memory_gb,
        ),
        size=size,
        as_json=as_json,
        cache_dir=cache_dir or default_cache_dir(),
    )
    run_plan(args)


@app.command("loras")
def loras_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="The server's TOML settings.", metavar="FILE")] = None,
) -> None:
    """List the LoRA adapters in the server's lora_dir, with the model family each is for."""
    print_loras(load_settings(config_file=config), as_json=as_json)


c2pa_app = typer.Typer(help="C2PA Content Credentials.", no_args_is_help=True)
app.add_typer(c2pa_app, name="c2pa")


@c2pa_app.command("test-cert")
def c2pa_test_cert(
    out: Annotated[Path, typer.Option("--out", help="The folder to write the files into.", metavar="DIR")] = Path(),
) -> None:
    """Make a local test CA and a signing certificate it issued, for trying Content Credentials out."""
    files = make_test_certificates(out)
    typer.echo(f"test CA (trust anchor for readers): {files.ca}")
    typer.echo(f'c2pa_cert_file = "{files.chain}"')
    typer.echo(f'c2pa_key_file = "{files.key}"')
    typer.echo("Readers trust these images only when told to trust the test CA; for production, use a certificate")
    typer.echo("from a CA on the C2PA trust list.")


def _fail(message: str, code: int) -> int:
    typer.echo(f"fluxserve: error: {message}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command; errors become one line on stderr and a non-zero exit."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="fluxserve", standalone_mode=False)
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        return _fail("interrupted", 130)
    except typer.TyperException as error:  # bad usage: unknown option, a value of the wrong type...
        code = int(getattr(error, "exit_code", 2))
        message = error.format_message()
        return _fail(message, code) if message else code  # no message: help was already shown
    except InvalidRequest as error:
        return _fail(str(error), 2)
    except FluxserveError as error:
        return _fail(str(error), 1)
    except OSError as error:
        return _fail(str(error), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
