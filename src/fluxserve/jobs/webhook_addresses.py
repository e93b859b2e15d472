"""Addresses a webhook is never sent to: cloud metadata services and addresses that are not a host.

A webhook URL comes from whoever holds an API key, and the server posts to it from inside its own
network. Loopback and private addresses stay allowed (a self-hosted receiver often lives there),
but link-local addresses (169.254.0.0/16 and fe80::/10, where cloud metadata services answer with
credentials), the known metadata addresses outside them, unspecified and multicast addresses are
refused: when the request comes in if the URL names such an address, and again before each
delivery, after the host name is resolved.
"""

from __future__ import annotations

import ipaddress
import socket

_METADATA = {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def forbidden(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local or address.is_unspecified or address.is_multicast or address in _METADATA


def literal(host: str) -> Address | None:
    """The address ``host`` is written as, or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def forbidden_reason(host: str, port: int) -> str | None:
    """Why a delivery to ``host`` must not be made, or None. Names are resolved first; a name that
    does not resolve is left to the HTTP client, which reports it as a network error."""
    address = literal(host)
    if address is not None:
        addresses = [address]
    else:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for found in addresses:
        if forbidden(found):
            return f"{host} is {found}, a link-local, metadata, unspecified or multicast address; not sent"
    return None
