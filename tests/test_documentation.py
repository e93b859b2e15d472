"""The README stays true: every setting, endpoint and command-line flag it shows exists as shown,
with the stated default, and every setting and endpoint is documented. Drift fails here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.core import TyperCommand, TyperGroup

from fluxserve.api.protocol.images import FormImageBody, JsonImageBody
from fluxserve.cli.main import app as cli_app
from fluxserve.settings import Settings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTINGS_HEADER = "| setting (`FLUXSERVE_...`) | default | meaning |"
ENDPOINT = re.compile(r"(/v1/[\w/{}.@:-]*|/client/v4/[\w/{}.@:-]*|/health|/ready)")


def _without_parentheses(text: str) -> str:
    return re.sub(r"\([^()]*\)", "", text)


def _settings_rows() -> list[tuple[list[str], str]]:
    """The configuration table: each row's setting names and its default cell."""
    table = README.split(SETTINGS_HEADER, 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.strip().splitlines()[1:]:
        name_cell, default_cell, _ = (cell.strip() for cell in line.strip().strip("|").split(" | ", 2))
        rows.append((re.findall(r"`(\w+)`", _without_parentheses(name_cell)), default_cell))
    return rows


def _is_unset(default: Any) -> bool:
    return default is None or default in ([], {})


def _default_matches(written: str, default: Any) -> bool:
    """Does one README default (``64``, ``true``, `` `none` ``, ``none: CORS off``, prose) match the code's?

    Prose (``the GPU's free memory``) may only describe a default the code leaves unset: one worked
    out at run time. A value written as a literal must be the code's own.
    """
    value = _without_parentheses(written).strip()
    literal = re.fullmatch(r"`([^`]*)`", value)
    if literal is not None:
        text = literal.group(1)
        if isinstance(default, bool):
            return text == str(default).lower()
        if isinstance(default, list):
            return text == ",".join(default)
        if isinstance(default, Path):
            return Path(text).expanduser() == default
        return text == str(default)
    if value in ("true", "false"):
        return isinstance(default, bool) and value == str(default).lower()
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return not isinstance(default, bool) and isinstance(default, int | float) and float(value) == default
    return _is_unset(default)


def test_the_settings_table_has_every_setting_and_only_settings() -> None:
    named = [name for names, _ in _settings_rows() for name in names]
    assert [name for name in Settings.model_fields if name not in named] == [], "undocumented settings"
    assert [name for name in named if name not in Settings.model_fields] == [], "documented, but not settings"
    assert len(named) == len(set(named)), "a setting documented twice"


def test_the_settings_table_states_each_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    wrong = []
    for names, cell in _settings_rows():
        written = [part.strip() for part in _without_parentheses(cell).split(", ")] if len(names) > 1 else [cell]
        if len(written) == 1:
            written *= len(names)
        assert len(written) == len(names), f"{names}: give one default, or one per setting: {cell!r}"
        for name, value in zip(names, written, strict=True):
            if name not in Settings.model_fields:
                continue  # reported by the test above
            default = Settings.model_fields[name].get_default(call_default_factory=True)
            if not _default_matches(value, default):
                wrong.append(f"{name}: README {value!r}, code {default!r}")
    assert wrong == []


def test_the_default_check_can_fail() -> None:
    assert not _default_matches("65", 64)
    assert not _default_matches("`true`", False)
    assert not _default_matches("`nsfw,porn`", ["nsfw"])
    assert not _default_matches("the GPU's free memory", "none")
    assert _default_matches("none: CORS off", [])
    assert _default_matches("0 (off)", 0)


def test_every_endpoint_is_in_the_readme(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    documented = {re.sub(r"\{[^}]+\}", "{}", path) for path in ENDPOINT.findall(README)}
    missing = [path for path in paths if re.sub(r"\{[^}]+\}", "{}", path) not in documented]
    assert missing == []


def test_every_endpoint_the_readme_shows_exists(client: TestClient) -> None:
    """Each ``METHOD /path`` the README names is a route with that method; each bare path, a route."""
    paths = client.get("/openapi.json").json()["paths"]
    routes = [(re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"), path) for path in paths]

    def methods(shown: str) -> set[str] | None:
        """The methods of the routes ``shown`` matches; a literal segment beats a parameter (/v1/usage, /v1/{model})."""
        found = [path for pattern, path in routes if pattern.match(shown.rstrip(".:"))]
        fewest = min((path.count("{") for path in found), default=0)
        return {method.upper() for path in found if path.count("{") == fewest for method in paths[path]} or None

    unknown = [path for path in ENDPOINT.findall(README) if methods(path) is None]
    wrong = [
        f"{method} {path}"
        for method, path in re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) " + ENDPOINT.pattern, README)
        if method not in (methods(path) or set())
    ]
    assert (unknown, wrong) == ([], [])


def test_every_images_field_is_in_the_readme() -> None:
    """Each field of the images endpoints' bodies, in JSON or a form, is in the HTTP API section;
    numbered ones (``input_image_5``) by their first name (``input_image_0``, ``input_image_2``)."""
    section = README.split("\n## The HTTP API", 1)[1].split("\n## ", 1)[0]
    shown = set(re.findall(r"`(\w+)", section))
    fields = {*JsonImageBody.model_fields, *FormImageBody.model_fields}
    stems = {re.sub(r"_\d+$", "_", name) for name in shown}
    assert [field for field in sorted(fields) if field not in shown and re.sub(r"_\d+$", "_", field) not in stems] == []


def test_every_metric_is_in_the_metrics_table(client: TestClient) -> None:
    """Each family /metrics serves is a row of the table, and each row is a metric the code defines."""
    table = README.split("| metric | type, labels |", 1)[1].split("\n\n", 1)[0]
    documented = {
        name for line in table.splitlines() for name in re.findall(r"`(fluxserve_\w+)`", line.split(" | ")[0])
    }
    families = text_string_to_metric_families(client.get("/metrics").text)
    served = {family.name + ("_total" if family.type == "counter" else "") for family in families}
    served = {name for name in served if not name.endswith("_created")}  # prometheus_client's start times
    assert "fluxserve_jobs_total" in served
    assert served - documented == set()
    telemetry = "".join(path.read_text(encoding="utf-8") for path in (ROOT / "src/fluxserve/telemetry").glob("*.py"))
    assert [name for name in documented if f'"{name.removesuffix("_total")}"' not in telemetry] == []


def _command_lines() -> list[str]:
    """Every ``fluxserve ...`` command the README shows, in code blocks and in inline code."""
    lines, fence = [], None
    for line in README.replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            fence = line[3:] if fence is None else None
        elif fence in ("bash", ""):
            lines.append(re.sub(r"(^|\s)#.*", "", line))
        elif fence is None:
            lines += re.findall(r"`([^`]+)`", line)
    commands = []
    for line in lines:
        for found in re.finditer(r"(?:^|[\s(])(?:fluxserve|scripts/run) ([a-z][^#`)\n]*)", line):
            commands.append(found.group(1).strip())
    return commands


Command = TyperCommand | TyperGroup


def _command(*path: str) -> Command:
    command = typer.main.get_command(cli_app)
    for name in path:
        assert isinstance(command, TyperGroup)
        command = command.commands[name]
    assert isinstance(command, TyperCommand | TyperGroup)
    return command


def _options(command: Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}


def _unknown_flags(command_line: str) -> list[str]:
    path: list[str] = []
    words = shlex.split(command_line, comments=True)
    while isinstance(command := _command(*path), TyperGroup) and words and words[0] in command.commands:
        path.append(words.pop(0))
    flags = [word.split("=", 1)[0] for word in words if re.fullmatch(r"--?[a-z][\w-]*(=.*)?", word)]
    return [flag for flag in flags if flag not in _options(command)]


def test_every_command_line_flag_the_readme_shows_exists() -> None:
    commands = _command_lines()
    assert any(line.startswith("generate ") for line in commands)  # the search finds them
    unknown = {line: flags for line in commands if (flags := _unknown_flags(line))}
    assert unknown == {}


def test_every_option_in_the_option_tables_exists() -> None:
    tables = {
        "| option | meaning |": _command("generate"),
        "| `keys create` option | meaning |": _command("keys", "create"),
    }
    unknown = []
    for header, command in tables.items():
        table = README.split(header, 1)[1].split("\n\n", 1)[0]
        for line in table.strip().splitlines()[1:]:
            shown = re.findall(r"`(--?[a-z][\w-]*)", line.split(" | ")[0])
            unknown += [flag for flag in shown if flag not in _options(command)]
    assert unknown == []


def _commands(*path: str) -> dict[str, Command]:
    """Every command by its path (``keys create``), groups included."""
    command = _command(*path)
    found = {" ".join(path): command}
    if isinstance(command, TyperGroup):
        for name in command.commands:
            found |= _commands(*path, name)
    return found


def test_every_command_line_flag_is_in_the_readme() -> None:
    shown = set(re.findall(r"--[a-z][\w-]*", README)) | {"--help"}
    flags = {path: {opt for param in command.params for opt in param.opts} for path, command in _commands().items()}
    long_flags = {path: {opt for opt in opts if opt.startswith("--")} for path, opts in flags.items()}
    missing = {path: sorted(opts - shown) for path, opts in long_flags.items() if opts - shown}
    assert missing == {}


def test_the_flag_check_can_fail() -> None:
    assert _unknown_flags("generate 'a fox' --sizes 512x512 -m tiny-random") == ["--sizes"]
    assert _unknown_flags("keys create --name ci --rpm 5 --json") == ["--json"]


def test_every_link_within_the_readme_has_its_heading() -> None:
    anchors = set()
    for heading in re.findall(r"^#{2,4} (.+)$", README, re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    links = re.findall(r"\]\(#([^)]+)\)", README)
    assert links, "the search finds the links"
    assert [link for link in links if link not in anchors] == []
