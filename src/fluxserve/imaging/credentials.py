"""C2PA Content Credentials: a signed manifest in each output image (the ``c2pa`` extra).

:class:`ContentCredentials` signs encoded PNG, JPEG and WebP bytes with a certificate chain and
its key. The manifest says what made the image: a ``c2pa.created`` action (``c2pa.opened`` then
``c2pa.edited`` for an edit, whose reference images are its ingredients, the first its parent)
with the digital source type ``trainedAlgorithmicMedia`` and fluxserve and the model as the
software agent. An image a provider made and signed itself (BFL) keeps that provider's manifest
as its parent ingredient. Signing is the last thing done to the bytes: anything written into the
file after it breaks the signature.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxserve.errors import InvalidRequest, MissingExtra
from fluxserve.imaging.encode import ImageFormat

Sign = Callable[[bytes, ImageFormat, bytes | None], bytes]
"""Signs one encoded image, given the file its provider sent, if any (:meth:`ContentCredentials.signer`)."""
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


@dataclass(frozen=True)
class Ingredient:
    """An image that went into an output: its encoded bytes and their media type."""

    data: bytes
    media_type: str
    title: str


@dataclass(frozen=True)
class Provenance:
    """Where one output image came from."""

    model: str
    references: Sequence[Ingredient] = field(default_factory=tuple)
    """An edit's reference images, in order (the first is the parent)."""
    source: bytes | None = None
    """The file a provider sent (the output re-encodes it): when the provider signed it, its manifest
    is the output's parent; otherwise the output is described as created by ``model``."""


def reference_ingredients(files: Sequence[bytes]) -> list[Ingredient]:
    """An edit's reference images (PNG files, in order) as ingredients."""
    return [
        Ingredient(data, ImageFormat.PNG.media_type, f"reference image {number}")
        for number, data in enumerate(files, start=1)
    ]


def media_type_of(data: bytes) -> str | None:
    """PNG, JPEG or WebP by their first bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG.media_type
    if data.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG.media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP.media_type
    return None


def _import_c2pa() -> Any:
    try:
        import c2pa
    except ImportError:
        raise MissingExtra("c2pa", "Content Credentials (c2pa_cert_file)", "c2pa-python") from None
    return c2pa


def signing_algorithm(private_key: bytes) -> str:
    """The C2PA algorithm name for a PEM private key (EC P-256/384/521, Ed25519 or RSA)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError) as error:
        problem = f"c2pa_key_file is not an unencrypted PEM private key: {error}"
        raise InvalidRequest(problem, param="c2pa_key_file") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    raise InvalidRequest("c2pa_key_file must be an EC (P-256, P-384, P-521), Ed25519 or RSA key", param="c2pa_key_file")


class ContentCredentials:
    """Signs images with a certificate chain (signing certificate first, then the CAs) and its key.

    Safe to use from several threads. The chain is checked at construction by signing a tiny image
    and reading it back: a key that does not match its certificate fails there, not in a job.
    """

    def __init__(self, certificate_chain: bytes, private_key: bytes, *, version: str) -> None:
        c2pa = self._c2pa = _import_c2pa()
        self.version = version
        algorithm = signing_algorithm(private_key)
        try:
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(algorithm, certificate_chain, private_key, None))
            settings = c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}})
            self._context = c2pa.Context(settings=settings, signer=signer)
        except c2pa.C2paError as error:
            problem = f"c2pa_cert_file and c2pa_key_file cannot sign: {error}"
            raise InvalidRequest(problem, param="c2pa_cert_file") from None
        self._lock = threading.Lock()
        self._check()

    @classmethod
    def from_files(cls, certificate_chain: Path, private_key: Path, *, version: str) -> ContentCredentials:
        try:
            chain, key = certificate_chain.read_bytes(), private_key.read_bytes()
        except OSError as error:
            raise InvalidRequest(f"cannot read the C2PA signing files: {error}", param="c2pa_cert_file") from None
        return cls(chain, key, version=version)

    def _check(self) -> None:
        from PIL import Image

        from fluxserve.imaging.encode import encode_image

        c2pa = self._c2pa
        sample = encode_image(Image.new("RGB", (8, 8)), ImageFormat.PNG)
        try:
            signed = self.sign(sample, ImageFormat.PNG, Provenance(model="self-check"))
            reader = c2pa.Reader(ImageFormat.PNG.media_type, io.BytesIO(signed))
            results = reader.get_validation_results() or {}
        except c2pa.C2paError as error:  # a self-signed signing certificate, for one
            results = {"activeManifest": {"failure": [{"code": "signing", "explanation": str(error)}]}}
        # Whether readers trust the CA is theirs to say (the test CA is trusted nowhere): anything else fails.
        failures = [
            item
            for item in results.get("activeManifest", {}).get("failure", [])
            if item.get("code") != "signingCredential.untrusted"
        ]
        if failures:
            said = "; ".join(f"{item.get('code')}: {item.get('explanation')}" for item in failures)
            raise InvalidRequest(
                f"c2pa_cert_file and c2pa_key_file make Content Credentials that do not validate ({said}); "
                "use a signing certificate issued by a CA, followed by that CA, and the certificate's own key "
                "(`fluxserve c2pa test-cert` makes a pair for trying it out)",
                param="c2pa_cert_file",
            )

    def signer(self, model: str, references: Sequence[Ingredient] = ()) -> Sign:
        """Signs each encoded image of one request to ``model`` (an edit of ``references``), given the file
        its provider sent, if any."""

        def sign(data: bytes, fmt: ImageFormat, source: bytes | None) -> bytes:
            return self.sign(data, fmt, Provenance(model, references, source))

        return sign

    def sign(self, data: bytes, fmt: ImageFormat, provenance: Provenance) -> bytes:
        """``data`` (an encoded image of ``fmt``) with a signed manifest embedded."""
        c2pa = self._c2pa
        parent = self._signed_source(provenance.source)
        with self._lock:  # one signature at a time over the shared context and signer
            builder = c2pa.Builder(self._manifest(provenance, parent), self._context)
            try:
                for label, relationship, ingredient in _ingredients(provenance, parent):
                    builder.add_ingredient(
                        {"title": ingredient.title, "relationship": relationship, "label": label},
                        ingredient.media_type,
                        io.BytesIO(ingredient.data),
                    )
                signed = io.BytesIO()
                builder.sign(fmt.media_type, io.BytesIO(data), signed)
                return signed.getvalue()
            finally:
                builder.close()

    def _signed_source(self, source: bytes | None) -> Ingredient | None:
        """The provider's file as an ingredient when it carries a C2PA manifest (valid or not: a reader
        judges it); None when there is no file or it is unsigned."""
        media_type = None if source is None else media_type_of(source)
        if source is None or media_type is None:
            return None
        c2pa = self._c2pa
        try:
            reader = c2pa.Reader.try_create(media_type, io.BytesIO(source))
        except c2pa.C2paError:
            return None
        if reader is None:
            return None
        reader.close()
        return Ingredient(source, media_type, "the provider's image")

    def _manifest(self, provenance: Provenance, parent: Ingredient | None) -> dict[str, Any]:
        agent = {"name": "fluxserve", "version": self.version, "model": provenance.model}
        actions: list[dict[str, Any]]
        if parent is not None:
            actions = [
                {"action": "c2pa.opened", "softwareAgent": agent, "parameters": {"ingredientIds": ["source"]}},
                {"action": "c2pa.transcoded", "softwareAgent": agent},
            ]
        elif provenance.references:
            others = [label for label, relation, _ in _ingredients(provenance, None) if relation == "componentOf"]
            edited: dict[str, Any] = {
                "action": "c2pa.edited",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": agent,
                "description": f"edited by {provenance.model}",
            }
            if others:
                edited["parameters"] = {"ingredientIds": others}
            opened = {"action": "c2pa.opened", "softwareAgent": agent, "parameters": {"ingredientIds": ["reference-1"]}}
            actions = [opened, edited]
        else:
            actions = [
                {
                    "action": "c2pa.created",
                    "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                    "softwareAgent": agent,
                    "description": f"generated by {provenance.model}",
                }
            ]
        return {
            "claim_generator_info": [{"name": "fluxserve", "version": self.version}],
            "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
        }


def _ingredients(provenance: Provenance, parent: Ingredient | None) -> list[tuple[str, str, Ingredient]]:
    """(label, relationship, ingredient) of each ingredient: the provider's signed image, or the references."""
    if parent is not None:
        return [("source", "parentOf", parent)]
    return [
        (f"reference-{number}", "parentOf" if number == 1 else "componentOf", reference)
        for number, reference in enumerate(provenance.references, start=1)
    ]
