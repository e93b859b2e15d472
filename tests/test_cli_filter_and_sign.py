"""``fluxserve generate`` honours the server's content filter and C2PA settings (here from --config), through
the same code as the server: the tiny random classifier decides by its threshold (tests/safety_support.py),
and c2pa's own Reader checks the signatures against the test CA of ``fluxserve c2pa test-cert``."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import c2pa
import pytest

from fluxserve import __version__
from fluxserve.cli.main import main
from fluxserve.imaging.c2pa_certificates import CertificateFiles, make_test_certificates
from fluxserve.imaging.credentials import TRAINED_ALGORITHMIC_MEDIA
from fluxserve.imaging.encode import ImageFormat, read_parameters
from tests.helpers import photo
from tests.safety_support import BLOCK_ALL, PASS_ALL, filtering

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return make_test_certificates(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture
def generate(cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """``fluxserve generate`` on tiny-random (64x64) in this process, with these settings in a --config file."""

    def run(*args: str, settings: dict[str, Any]) -> tuple[int, str, str]:
        config = tmp_path / "fluxserve.toml"
        config.write_text("".join(f"{name} = {toml(value)}\n" for name, value in settings.items()))
        common = ["--model", "tiny-random", "--size", "64x64", "--seed", "3", "--cache-dir", str(cache_dir)]
        code = main(["generate", *args, *common, "--config", str(config)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def toml(value: Any) -> str:
    return repr(value) if isinstance(value, float) else f'"{value}"'


def reference(tmp_path: Path) -> Path:
    path = tmp_path / "ref.png"
    photo(64, 64, 5).save(path)
    return path


def signing(certificates: CertificateFiles) -> dict[str, Any]:
    return {"c2pa_cert_file": certificates.chain, "c2pa_key_file": certificates.key}


# -- the content filter --------------------------------------------------------------------------
def test_a_withheld_output_is_one_line_a_non_zero_exit_and_no_file(
    generate: Run, classifier_dir: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    code, out, err = generate("a fox", "-o", f"{out_dir}/", settings=filtering(classifier_dir, "outputs", BLOCK_ALL))
    assert (code, out) == (2, "")  # refused as the server's 400 is: change the prompt
    assert err.count("\n") == 1
    assert err.startswith("fluxserve: error: ")
    assert "content filter withheld the generated image 1 of 1 (nsfw score" in err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_a_refused_reference_stops_before_generating(generate: Run, classifier_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "edit.png"
    settings = filtering(classifier_dir, "refs", BLOCK_ALL)
    code, out, err = generate("night", "--ref", str(reference(tmp_path)), "-o", str(target), settings=settings)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "image[0] was refused by this server's content filter" in err
    assert not target.exists()


def test_what_the_filter_passes_is_written(generate: Run, classifier_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "edit.png"
    settings = filtering(classifier_dir, "both", PASS_ALL)
    code, out, err = generate("night", "--ref", str(reference(tmp_path)), "-o", str(target), settings=settings)
    assert code == 0, err
    assert out.splitlines()[0] == f"{target}\tseed 3"
    parameters = read_parameters(target.read_bytes())
    assert parameters is not None
    assert parameters["reference_images"] == 1


# -- C2PA ----------------------------------------------------------------------------------------
def read(data: bytes, fmt: ImageFormat, anchors: CertificateFiles) -> c2pa.Reader:
    """c2pa's Reader, trusting only the test CA."""
    settings = {"verify": {"verify_trust": True}, "trust": {"trust_anchors": anchors.ca.read_text()}}
    return c2pa.Reader(fmt.media_type, io.BytesIO(data), None, c2pa.Context.from_dict(settings))


def actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    [found] = [a["data"]["actions"] for a in manifest["assertions"] if a["label"].startswith("c2pa.actions")]
    return found  # type: ignore[no-any-return]


@pytest.mark.parametrize("fmt", [ImageFormat.PNG, ImageFormat.JPEG])
def test_generated_files_carry_trusted_credentials(
    generate: Run, certificates: CertificateFiles, tmp_path: Path, fmt: ImageFormat
) -> None:
    target = tmp_path / f"lake.{fmt.extension}"
    code, _, err = generate("a lake", "-o", str(target), settings=signing(certificates))
    assert code == 0, err
    data = target.read_bytes()
    reader = read(data, fmt, certificates)
    assert reader.get_validation_state() == "Trusted", reader.get_validation_results()
    manifest = reader.get_active_manifest()
    assert manifest is not None
    [created] = actions(manifest)
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert created["softwareAgent"] == {"name": "fluxserve", "version": __version__, "model": "tiny-random"}
    parameters = read_parameters(data)  # the parameters are still there: signing came last
    assert parameters is not None
    assert parameters["seed"] == 3


def test_an_edit_is_signed_with_its_reference_as_ingredient_and_the_filter_on(
    generate: Run, certificates: CertificateFiles, classifier_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "edit.png"
    settings = {**signing(certificates), **filtering(classifier_dir, "both", PASS_ALL)}
    code, _, err = generate("night", "--ref", str(reference(tmp_path)), "-o", str(target), settings=settings)
    assert code == 0, err
    reader = read(target.read_bytes(), ImageFormat.PNG, certificates)
    assert reader.get_validation_state() == "Trusted", reader.get_validation_results()
    manifest = reader.get_active_manifest()
    assert manifest is not None
    assert [(i["title"], i["relationship"]) for i in manifest["ingredients"]] == [("reference image 1", "parentOf")]
    assert [action["action"] for action in actions(manifest)] == ["c2pa.opened", "c2pa.edited"]


def test_a_signer_that_cannot_sign_is_one_line_before_any_model_loads(generate: Run, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    code, out, err = generate("a lake", settings={"c2pa_cert_file": key, "c2pa_key_file": key})
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "c2pa_key_file is not an unencrypted PEM private key" in err
