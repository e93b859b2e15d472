"""The webhook client over https: it connects to the address it checked, with the URL's name for SNI and
the certificate. How deliveries use it (rebinding, resolution failures, proxies) is in test_webhooks.py."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fluxserve.webhooks.client import webhook_client
from tests.helpers import TEST_TIMEOUT
from tests.webhook_receiver import Answer, Receiver
from tests.webhook_resolvers import NAME, Rebinding

# -- https: the pinned address, the URL's name for SNI and the certificate ---------------------------


def certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key, made with the openssl command."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}"),
            *("-addext", f"subjectAltName=DNS:{name}"),
        ],
        check=True,
        capture_output=True,
        timeout=TEST_TIMEOUT,
    )
    return cert, key


@pytest.fixture
def https_receiver(tmp_path: Path) -> Iterator[Callable[[str], tuple[Receiver, ssl.SSLContext]]]:
    """An https receiver on loopback with a certificate for a given name, and a client context trusting it."""
    started: list[Receiver] = []

    def start(name: str) -> tuple[Receiver, ssl.SSLContext]:
        cert, key = certificate(tmp_path, name)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert, key)
        receiver = Receiver([Answer(204)], tls=server)
        started.append(receiver)
        return receiver, ssl.create_default_context(cafile=str(cert))

    yield start
    for receiver in started:
        receiver.close()


def test_https_keeps_the_url_name_for_sni_and_the_certificate(
    https_receiver: Callable[[str], tuple[Receiver, ssl.SSLContext]],
) -> None:
    receiver, trusted = https_receiver(NAME)

    with webhook_client(TEST_TIMEOUT, Rebinding(), trusted) as client:
        response = client.post(f"https://{NAME}:{receiver.port}/hooks", content=b"{}")

    assert response.status_code == 204
    assert receiver.server_names == [NAME]
    assert receiver.requests[0].headers["host"] == f"{NAME}:{receiver.port}"


def test_https_refuses_a_certificate_for_another_name(
    https_receiver: Callable[[str], tuple[Receiver, ssl.SSLContext]],
) -> None:
    receiver, trusted = https_receiver("other.example.test")

    with webhook_client(TEST_TIMEOUT, Rebinding(), trusted) as client, pytest.raises(httpx.ConnectError):
        client.post(f"https://{NAME}:{receiver.port}/hooks", content=b"{}")

    assert receiver.requests == []
