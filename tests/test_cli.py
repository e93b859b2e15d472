"""The command line, end to end: files written, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fluxserve.cli.main import main
from fluxserve.imaging.encode import read_parameters
from tests.helpers import TEST_TIMEOUT, photo


@pytest.fixture
def run(cache_dir: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def invoke(*args: str) -> tuple[int, str, str]:
        code = main([*args[:1], *(["--cache-dir", str(cache_dir)] if args[:1] == ("generate",) else []), *args[1:]])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_generate_writes_the_image_and_reports_seed_and_timings(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "fox.png"
    code, out, err = run(
        "generate", "a red fox", "--model", "tiny-random", "--size", "128x96", "--seed", "7", "-o", str(target)
    )
    assert code == 0, err
    assert out.splitlines()[0] == f"{target}\tseed 7"
    assert "tiny-random on cpu: 128x96, 4 steps" in out
    assert "generate" in out
    assert "encode" in out
    with Image.open(target) as image:
        assert image.size == (128, 96)
    parameters = read_parameters(target.read_bytes())
    assert parameters is not None
    assert (parameters["prompt"], parameters["seed"], parameters["model"]) == ("a red fox", 7, "tiny-random")


def test_several_images_are_numbered_and_each_has_its_seed(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(
        "generate",
        "boats",
        "--model",
        "tiny-random",
        "--size",
        "64x64",
        "--seed",
        "40",
        "-n",
        "3",
        "-o",
        str(tmp_path / "boat.jpg"),
    )
    assert code == 0
    names = [line.split("\t") for line in out.splitlines()[:3]]
    assert names == [[str(tmp_path / f"boat-{i}.jpg"), f"seed {40 + i - 1}"] for i in (1, 2, 3)]
    for i in (1, 2, 3):
        with Image.open(tmp_path / f"boat-{i}.jpg") as image:
            assert image.format == "JPEG"


def test_a_folder_output_gets_fresh_names_in_the_chosen_format(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, _ = run(
        "generate", "hills", "--model", "tiny-random", "--size", "64x64", "--format", "webp", "-o", str(tmp_path)
    )
    assert code == 0
    [written] = list(tmp_path.iterdir())
    assert written.suffix == ".webp"
    assert written.name.startswith("fluxserve-")


def test_a_new_folder_ending_in_a_slash_is_created(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("generate", "hills", "--model", "tiny-random", "--size", "64x64", "-o", f"{tmp_path}/new/")
    assert code == 0
    [written] = list((tmp_path / "new").iterdir())
    assert written.suffix == ".png"
    assert out.startswith(str(written))


def test_a_file_name_without_extension_gets_the_formats(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, _ = run(
        "generate", "hills", "--model", "tiny-random", "--size", "64x64", "-f", "jpeg", "-o", str(tmp_path / "picture")
    )
    assert code == 0
    assert (tmp_path / "picture.jpg").is_file()


def test_json_prompt_and_references(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prompt = tmp_path / "prompt.json"
    prompt.write_text(json.dumps({"scene": "a quiet harbour", "subjects": [{"description": "a red boat"}]}))
    ref = tmp_path / "ref.png"
    photo(160, 120).save(ref)
    code, _out, err = run(
        "generate",
        "--json-prompt",
        str(prompt),
        "--ref",
        str(ref),
        "--ref",
        str(ref),
        "--model",
        "tiny-random-dev",
        "--steps",
        "2",
        "--guidance",
        "3",
        "--size",
        "64x64",
        "-o",
        str(tmp_path / "out.png"),
    )
    assert code == 0, err
    parameters = read_parameters((tmp_path / "out.png").read_bytes())
    assert parameters is not None
    assert parameters["prompt"] == '{"scene":"a quiet harbour","subjects":[{"description":"a red boat"}]}'
    assert parameters["reference_images"] == 2
    assert (parameters["steps"], parameters["guidance"]) == (2, 3.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--size", "250x256"], "width 250 is not a multiple of 16; the nearest valid size is 256x256"),
        (["x", "--size", "big"], "not of the form WIDTHxHEIGHT"),
        (["x", "--steps", "9"], "always runs 4 steps"),
        (["x", "-n", "0"], "n 0 is outside 1-10"),
        (["x", "--format", "gif"], "--format 'gif' is not supported"),
        (["x", "--format", "png", "-o", "a.jpg"], "does not match the output file name"),
        (["x", "--compression", "200"], "--compression must be between 0 and 100"),
        (["x", "--ref", "/nonexistent.png"], "cannot read --ref /nonexistent.png"),
        (["--json-prompt", "/nonexistent.json"], "cannot read --json-prompt"),
        ([], "give a prompt or --json-prompt FILE"),
        (["x", "--offload", "gpu"], "--offload must be none, model or sequential"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(run, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("generate", "--model", "tiny-random", *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("fluxserve: error: ")
    assert message in err


def test_bad_json_prompt_files(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"scene": "x", "subjects": [{"description": "y", "position": "up"}]}))
    for path, message in (
        (broken, "is not valid JSON"),
        (listed, "must hold a JSON object, not list"),
        (invalid, "prompt.subjects[0].position"),
    ):
        code, _, err = run("generate", "--model", "tiny-random", "--json-prompt", str(path))
        assert code == 2
        assert message in err


def test_a_reference_that_is_not_an_image(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    code, _, err = run("generate", "x", "--model", "tiny-random", "--ref", str(fake))
    assert code == 2
    assert f"--ref {fake} is not an image" in err


def test_unknown_model_exits_1(run) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("generate", "x", "--model", "nope")
    assert code == 1
    assert "unknown model 'nope'" in err


def test_models_lists_every_known_model(run) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("models", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["flux.2-klein-4b"]["source"] == "black-forest-labs/FLUX.2-klein-4B"
    assert rows["flux.2-dev"]["gated"] is True
    assert rows["tiny-random"]["source"] == "built locally"
    code, table, _ = run("models")
    assert code == 0
    assert all(name in table for name in rows)


def test_the_installed_command_in_a_real_process(cache_dir: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FLUXSERVE_CACHE_DIR": str(cache_dir),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
    }
    command = [
        sys.executable,
        "-m",
        "fluxserve",
        "generate",
        "a kite",
        "--model",
        "tiny-random",
        "--size",
        "64x64",
        "-o",
        str(tmp_path / "kite.png"),
    ]
    limit = TEST_TIMEOUT * 5  # a new interpreter imports torch and diffusers, then builds the model
    ok = subprocess.run(command, capture_output=True, text=True, env=env, timeout=limit)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "kite.png").is_file()
    bad = subprocess.run([*command[:-2], "--size", "100x100"], capture_output=True, text=True, env=env, timeout=limit)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "fluxserve: error: width 100 is not a multiple of 16; the nearest valid size is 96x96"
    missing = subprocess.run(
        [*command[:5], "--model", "flux.2-klein-4b"], capture_output=True, text=True, env=env, timeout=limit
    )
    assert missing.returncode == 1
    assert "hf download black-forest-labs/FLUX.2-klein-4B" in missing.stderr
    assert "Traceback" not in missing.stderr
