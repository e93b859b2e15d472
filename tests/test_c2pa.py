"""C2PA Content Credentials, checked with c2pa's own Reader trusting the test CA that
``fluxserve c2pa test-cert`` makes: every output format carries a valid, trusted manifest that says
what made it, an edit names its references as ingredients, and a changed file fails validation."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import c2pa
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from fluxserve import __version__
from fluxserve.api.app import create_app
from fluxserve.cli.main import main
from fluxserve.engines.hosted.bfl import BflEngine
from fluxserve.engines.hosted.catalog import HOSTED
from fluxserve.engines.hosted.options import ProviderOptions
from fluxserve.errors import InvalidRequest
from fluxserve.imaging.c2pa_certificates import CertificateFiles, make_test_certificates
from fluxserve.imaging.credentials import TRAINED_ALGORITHMIC_MEDIA, ContentCredentials, Provenance
from fluxserve.imaging.encode import ImageFormat, encode_image
from fluxserve.settings import load_settings
from tests.fakes.bfl import FakeBfl
from tests.helpers import photo, png_bytes
from tests.servers import serve_in_thread


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return make_test_certificates(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture(scope="module")
def credentials(certificates: CertificateFiles) -> ContentCredentials:
    return ContentCredentials.from_files(certificates.chain, certificates.key, version=__version__)


def read(data: bytes, fmt: ImageFormat, anchors: CertificateFiles) -> c2pa.Reader:
    """c2pa's Reader, trusting only the test CA."""
    settings = {"verify": {"verify_trust": True}, "trust": {"trust_anchors": anchors.ca.read_text()}}
    return c2pa.Reader(fmt.media_type, io.BytesIO(data), None, c2pa.Context.from_dict(settings))


def actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    found = [a["data"]["actions"] for a in manifest["assertions"] if a["label"].startswith("c2pa.actions")]
    assert len(found) == 1
    return found[0]


IMAGE_DATA = {ImageFormat.PNG: b"IDAT", ImageFormat.JPEG: b"\xff\xda", ImageFormat.WEBP: b"VP8"}
"""Where each format's compressed pixels begin (the manifest sits in a chunk or segment of its own)."""


def tampered(data: bytes, fmt: ImageFormat) -> bytes:
    """The file with one byte of its pixel data changed, as an edit after signing would."""
    changed = bytearray(data)
    changed[data.index(IMAGE_DATA[fmt]) + 16] ^= 0xFF
    return bytes(changed)


@pytest.fixture
def signing_app(make_app: Callable[..., FastAPI], certificates: CertificateFiles) -> FastAPI:
    return make_app(models=["tiny-random"], c2pa_cert_file=certificates.chain, c2pa_key_file=certificates.key)


@pytest.mark.parametrize("fmt", list(ImageFormat))
def test_every_output_format_carries_trusted_credentials_of_its_creation(
    signing_app: FastAPI, certificates: CertificateFiles, fmt: ImageFormat
) -> None:
    with TestClient(signing_app) as client:
        body = {"prompt": "a lake", "size": "64x64", "output_format": fmt.value}
        response = client.post("/v1/images/generations", json=body)
        assert response.status_code == 200, response.text
        data = base64.b64decode(response.json()["data"][0]["b64_json"])
        job = client.get(f"/v1/jobs/{response.headers['x-job-id']}").json()
        stored = client.get(job["images"][0]["url"])
    assert stored.content == data  # the signed bytes are what is kept and served: nothing written after
    assert job["images"][0]["bytes"] == len(data)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == (fmt.name, (64, 64))

    reader = read(data, fmt, certificates)
    assert reader.get_validation_state() == "Trusted", reader.get_validation_results()
    manifest = reader.get_active_manifest()
    assert manifest is not None
    assert manifest["claim_generator_info"][0]["name"] == "fluxserve"
    assert manifest["signature_info"]["common_name"] == "fluxserve test signer"
    [created] = actions(manifest)
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert created["softwareAgent"] == {"name": "fluxserve", "version": __version__, "model": "tiny-random"}
    assert not manifest.get("ingredients")

    broken = read(tampered(data, fmt), fmt, certificates)
    assert broken.get_validation_state() == "Invalid"
    failures = broken.get_validation_results()["activeManifest"]["failure"]
    assert "assertion.dataHash.mismatch" in {failure["code"] for failure in failures}


def test_an_edit_names_its_references_as_ingredients(signing_app: FastAPI, certificates: CertificateFiles) -> None:
    files = [
        ("image[]", ("a.png", png_bytes(photo(64, 64, 1)), "image/png")),
        ("image[]", ("b.png", png_bytes(photo(64, 64, 2)), "image/png")),
    ]
    with TestClient(signing_app) as client:
        response = client.post("/v1/images/edits", data={"prompt": "both", "size": "64x64"}, files=files)
        assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    reader = read(data, ImageFormat.PNG, certificates)
    assert reader.get_validation_state() == "Trusted", reader.get_validation_results()
    manifest = reader.get_active_manifest()
    assert manifest is not None
    ingredients = manifest["ingredients"]
    assert [(i["title"], i["relationship"], i["format"]) for i in ingredients] == [
        ("reference image 1", "parentOf", "image/png"),
        ("reference image 2", "componentOf", "image/png"),
    ]
    opened, edited = actions(manifest)
    assert opened["action"] == "c2pa.opened"
    assert edited["action"] == "c2pa.edited"
    assert edited["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert edited["softwareAgent"]["model"] == "tiny-random"


def test_a_signed_provider_image_stays_the_parent(
    credentials: ContentCredentials, certificates: CertificateFiles
) -> None:
    # A provider's signed result (BFL signs its images), standing in: a JPEG with its own manifest.
    jpeg, png = encode_image(photo(64, 64), ImageFormat.JPEG), encode_image(photo(64, 64), ImageFormat.PNG)
    provider_file = credentials.sign(jpeg, ImageFormat.JPEG, Provenance("bfl"))
    ours = credentials.sign(png, ImageFormat.PNG, Provenance("bfl:flux-2-pro", source=provider_file))
    reader = read(ours, ImageFormat.PNG, certificates)
    assert reader.get_validation_state() == "Trusted", reader.get_validation_results()
    manifest = reader.get_active_manifest()
    assert manifest is not None
    [parent] = manifest["ingredients"]
    assert parent["relationship"] == "parentOf"
    assert parent["active_manifest"] in json.loads(reader.json())["manifests"]  # the provider's manifest kept
    assert [action["action"] for action in actions(manifest)] == ["c2pa.opened", "c2pa.transcoded"]

    unsigned = encode_image(photo(64, 64), ImageFormat.JPEG)  # a provider file without credentials
    plain = credentials.sign(unsigned, ImageFormat.JPEG, Provenance("bfl:flux-2-pro", source=unsigned))
    again = read(plain, ImageFormat.JPEG, certificates).get_active_manifest()
    assert again is not None
    assert [action["action"] for action in actions(again)] == ["c2pa.created"]


def test_test_cert_command_writes_a_chain_that_signs(tmp_path: Path) -> None:
    assert main(["c2pa", "test-cert", "--out", str(tmp_path)]) == 0
    chain, key = tmp_path / "c2pa-cert.pem", tmp_path / "c2pa-key.pem"
    assert chain.read_text().count("BEGIN CERTIFICATE") == 2  # the signing certificate, then the CA
    assert key.stat().st_mode & 0o077 == 0
    ContentCredentials.from_files(chain, key, version=__version__)


def test_a_self_signed_or_mismatched_signer_is_refused_at_start(tmp_path: Path) -> None:
    one, two = make_test_certificates(tmp_path / "one"), make_test_certificates(tmp_path / "two")
    with pytest.raises(InvalidRequest, match="do not validate") as mismatched:
        ContentCredentials.from_files(one.chain, two.key, version=__version__)
    assert mismatched.value.param == "c2pa_cert_file"
    certificate, key = _self_signed(tmp_path)
    with pytest.raises(InvalidRequest, match=r"do not validate.*the certificate is invalid"):
        ContentCredentials.from_files(certificate, key, version=__version__)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A signing certificate that signed itself: what C2PA refuses."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "self"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]
    )
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "self.pem").write_bytes(certificate.public_bytes(pem))
    secret = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / "self-key.pem").write_bytes(secret)
    return folder / "self.pem", folder / "self-key.pem"


def test_cert_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="c2pa_cert_file and c2pa_key_file together"):
        load_settings({"c2pa_cert_file": tmp_path / "cert.pem"}, environ={})


def test_a_bfl_result_signed_by_bfl_keeps_its_manifest_as_parent(
    make_settings: Callable[..., Any], certificates: CertificateFiles, tmp_path: Path
) -> None:
    bfl_files = make_test_certificates(tmp_path / "bfl", organization="BFL stand-in")
    bfl = ContentCredentials.from_files(bfl_files.chain, bfl_files.key, version="1")

    def sign_as_bfl(data: bytes, ext: str) -> bytes:
        return bfl.sign(data, ImageFormat(ext), Provenance("flux-2-pro"))

    fake = FakeBfl("bfl-test-key", sign=sign_as_bfl)
    with serve_in_thread(fake.app) as url:
        options = ProviderOptions(bfl_api_key="bfl-test-key", bfl_base_url=url, poll_min_seconds=0.01)
        engine = BflEngine(HOSTED["bfl:flux-2-pro"], options)
        settings = make_settings(
            models=["bfl:flux-2-pro"], c2pa_cert_file=certificates.chain, c2pa_key_file=certificates.key
        )
        with TestClient(create_app(settings, {"bfl:flux-2-pro": engine})) as client:
            body = {"model": "bfl:flux-2-pro", "prompt": "a lake", "size": "256x256", "output_format": "png"}
            response = client.post("/v1/images/generations", json=body)
            assert response.status_code == 200, response.text
        engine.close()
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    anchors = certificates.ca.read_text() + bfl_files.ca.read_text()
    context = c2pa.Context.from_dict({"verify": {"verify_trust": True}, "trust": {"trust_anchors": anchors}})
    reader = c2pa.Reader("image/png", io.BytesIO(data), None, context)
    assert reader.get_validation_state() == "Trusted", reader.get_validation_results()
    manifests = json.loads(reader.json())["manifests"]
    ours = reader.get_active_manifest()
    assert ours is not None
    [parent] = ours["ingredients"]
    assert parent["relationship"] == "parentOf"
    theirs = manifests[parent["active_manifest"]]
    assert theirs["signature_info"]["issuer"] == "BFL stand-in"
    assert [action["action"] for action in actions(theirs)] == ["c2pa.created"]
    assert [action["action"] for action in actions(ours)] == ["c2pa.opened", "c2pa.transcoded"]
    assert actions(ours)[0]["softwareAgent"]["model"] == "bfl:flux-2-pro"
