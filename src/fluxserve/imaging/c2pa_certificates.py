"""A local test CA and a C2PA signing certificate it issued, for trying Content Credentials out.

C2PA readers reject a self-signed signing certificate, so this makes two: a CA (the trust anchor
a reader is told to trust) and an end-entity certificate for signing (digitalSignature, the
emailProtection extended key usage C2PA accepts, not a CA). Neither is trusted by anyone else.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

CA_FILE, CHAIN_FILE, KEY_FILE = "c2pa-test-ca.pem", "c2pa-cert.pem", "c2pa-key.pem"


@dataclass(frozen=True)
class CertificateFiles:
    ca: Path
    """The test CA's certificate: the trust anchor for readers."""
    chain: Path
    """The signing certificate then the CA: ``c2pa_cert_file``."""
    key: Path
    """The signing certificate's private key: ``c2pa_key_file``."""


def make_test_certificates(folder: Path, *, organization: str = "fluxserve test", days: int = 365) -> CertificateFiles:
    """Write a new test CA, a signing certificate it issued, and that certificate's key into ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            ]
        )

    def usage(*, signing: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=signing,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=not signing,
            crl_sign=not signing,
            encipher_only=False,
            decipher_only=False,
        )

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organization} CA"))
        .issuer_name(name(f"{organization} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days * 2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organization} signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(signing=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    files = CertificateFiles(folder / CA_FILE, folder / CHAIN_FILE, folder / KEY_FILE)
    pem = serialization.Encoding.PEM
    files.ca.write_bytes(ca.public_bytes(pem))
    files.chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    secret = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    files.key.touch(mode=0o600)
    files.key.write_bytes(secret)
    files.key.chmod(0o600)
    return files
