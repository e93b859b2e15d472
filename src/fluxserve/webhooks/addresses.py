"""Addresses a webhook is never sent to: cloud metadata services and addresses that are not a host.

A webhook URL comes from whoever holds an API key, and the server posts to it from inside its own
network. Loopback and private addresses stay allowed (a self-hosted receiver often lives there),
but link-local addresses (169.254.0.0/16 and fe80::/10, where cloud metadata services answer with
credentials), the known metadata addresses outside them, unspecified, "this network", broadcast
and multicast addresses are refused, however they are written: an IPv6 address that carries an
IPv4 one (IPv4-mapped, -compatible or -translated, NAT64, 6to4, Teredo) is judged by the IPv4
address too. They are refused when the request comes in if the URL names such an address, and
again at each delivery, after the host name is resolved; the delivery then connects to the very
address that was checked (see :mod:`fluxserve.webhooks.client`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

Resolver = Callable[[str, int], list[Address]]
"""Host name and port to the addresses to try, in order; raises OSError when the name does not resolve."""

_METADATA = {
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("168.63.129.16"),  # Azure's host agent (WireServer)
}
_NOT_A_HOST = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("255.255.255.255/32"))
_IPV4_IN_LOW_96 = (
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated)
    ipaddress.ip_network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.ip_network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT)
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64, the well-known prefix
)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
"""NAT64 for local use (RFC 8215): the IPv4 address sits where the prefix length puts it (RFC 6052)."""
_LEGACY_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")
"""Digits, hex and dots: what ``inet_aton`` reads as IPv4 (``2852039166``, ``0xa9fea9fe``, ``169.254.43518``)."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address that ``address`` may stand for, in whichever way it embeds one."""
    found: list[ipaddress.IPv4Address] = []
    if any(address in network for network in _IPV4_IN_LOW_96) and int(address) > 1:  # not :: or ::1
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in _NAT64_LOCAL:
        found += [_rfc6052(address, length) for length in (48, 56, 64, 96)]
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found += list(address.teredo)
    return found


def _rfc6052(address: ipaddress.IPv6Address, prefix_length: int) -> ipaddress.IPv4Address:
    """The IPv4 address after a /``prefix_length`` NAT64 prefix (RFC 6052); bits 64-71 (the "u" octet) are skipped."""
    value = int(address)
    without_u = (value >> 64 << 56) | (value & (2**56 - 1))
    start = prefix_length if prefix_length <= 64 else prefix_length - 8
    return ipaddress.IPv4Address((without_u >> (120 - start - 32)) & 0xFFFFFFFF)


def forbidden(address: Address) -> bool:
    """True for an address no webhook is sent to, IPv4 addresses embedded in IPv6 ones included."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            address = ipaddress.IPv6Address(int(address))
        if any(_forbidden_one(embedded) for embedded in embedded_ipv4(address)):
            return True
    return _forbidden_one(address)


def _forbidden_one(address: Address) -> bool:
    not_a_host = isinstance(address, ipaddress.IPv4Address) and any(address in network for network in _NOT_A_HOST)
    return address.is_link_local or address.is_unspecified or address.is_multicast or not_a_host or address in _METADATA


def literal(host: str) -> Address | None:
    """The address ``host`` is written as, or None for a name; also reads the old IPv4 forms a resolver accepts."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def resolve(host: str, port: int) -> list[Address]:
    """The system resolver: every address ``host`` has, in the order to try them."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except UnicodeError as error:
        raise OSError(f"cannot resolve {host!r}: {error}") from error
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]))
        if address not in found:
            found.append(address)
    return found


def refusal(host: str, address: Address) -> str:
    """The reason recorded for a delivery refused because of ``address``."""
    return (
        f"{host} is {address}, a link-local, metadata, unspecified or multicast address, which this server "
        "never posts to; give the job a webhook_url that reaches the receiver itself"
    )
