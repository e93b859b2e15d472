"""Which addresses a webhook is never sent to, however they are written."""

from __future__ import annotations

import ipaddress

import pytest

from fluxserve.errors import InvalidRequest
from fluxserve.webhooks.addresses import Address, forbidden, literal
from fluxserve.webhooks.client import CheckedBackend, ForbiddenAddress
from fluxserve.webhooks.urls import check_webhook_url

FORBIDDEN = [
    "169.254.169.254",  # the cloud metadata service
    "2852039166",  # the same, as one decimal number
    "0xa9fea9fe",  # ... in hex
    "169.254.43518",  # ... with the last two parts as one
    "[::ffff:169.254.169.254]",  # IPv4-mapped
    "[::ffff:a9fe:a9fe]",
    "[0:0:0:0:0:ffff:a9fe:a9fe]",
    "[::a9fe:a9fe]",  # IPv4-compatible
    "[::169.254.169.254]",
    "[::ffff:0:a9fe:a9fe]",  # IPv4-translated
    "[64:ff9b::a9fe:a9fe]",  # NAT64, the well-known prefix
    "[64:ff9b::169.254.169.254]",
    "[64:ff9b:1::a9fe:a9fe]",  # NAT64 for local use, a /96 prefix
    "[64:ff9b:1:a9fe:a9:fe00::]",  # ... a /48 prefix (RFC 6052 skips bits 64-71)
    "[2002:a9fe:a9fe::1]",  # 6to4
    "[2001:0:4136:e378:8000:63bf:5601:5601]",  # Teredo, its client 169.254.169.254
    "[fe80::1]",  # IPv6 link-local
    "[fe80::1%25eth0]",
    "[fd00:ec2::254]",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba Cloud metadata
    "168.63.129.16",  # Azure's host agent
    "0.0.0.0",
    "0.1.2.3",  # "this network"
    "[::]",
    "255.255.255.255",
    "224.0.0.1",
    "[ff02::1]",
    "[::ffff:224.0.0.1]",
]

ALLOWED = [
    "127.0.0.1",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "10.0.0.5",
    "172.16.0.1",
    "192.168.1.10",
    "[fd12:3456::1]",
    "[::ffff:10.0.0.1]",
    "[64:ff9b::8.8.8.8]",
    "[2002:808:808::1]",
    "93.184.216.34",
]


def address_of(host: str) -> Address:
    address = literal(httpx_host(host))
    assert address is not None, host
    return address


def httpx_host(host: str) -> str:
    """The host as the sender's client hands it to the connection (brackets and %25 undone)."""
    import httpx

    return httpx.URL(f"http://{host}/").host


@pytest.mark.parametrize("host", FORBIDDEN)
def test_forbidden_forms_are_refused_when_the_request_comes_in(host: str) -> None:
    with pytest.raises(InvalidRequest, match="never posts to") as error:
        check_webhook_url(f"http://{host}:8080/hooks")
    assert error.value.param == "webhook_url"


@pytest.mark.parametrize("host", FORBIDDEN)
def test_forbidden_forms_are_refused_at_delivery_when_a_name_resolves_to_them(host: str) -> None:
    address = address_of(host)
    backend = CheckedBackend(lambda name, port: [ipaddress.ip_address("127.0.0.1"), address])

    with pytest.raises(ForbiddenAddress, match="never posts to"):
        backend.addresses("hooks.example.test", 443)


@pytest.mark.parametrize("host", ALLOWED)
def test_loopback_private_and_public_addresses_are_allowed(host: str) -> None:
    url = f"http://{host}:8080/hooks"
    assert check_webhook_url(url) == url
    assert not forbidden(address_of(host))
    assert CheckedBackend(lambda name, port: [address_of(host)]).addresses("hooks.example.test", 80) == [
        address_of(host)
    ]


def test_names_are_judged_at_delivery_not_when_the_request_comes_in() -> None:
    assert literal("hooks.example.com") is None
    assert literal("deadbeef") is None
    assert check_webhook_url("https://hooks.example.com/x") == "https://hooks.example.com/x"
