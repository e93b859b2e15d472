"""Resolvers the tests inject into the webhook sender: names only they can answer for."""

from __future__ import annotations

import ipaddress
import socket

from fluxserve.webhooks.addresses import Address

LOOPBACK = ipaddress.ip_address("127.0.0.1")
METADATA = ipaddress.ip_address("169.254.169.254")
NAME = "hooks.example.test"
"""A name no real resolver knows (.test is reserved): only the injected resolver can answer for it."""


class Rebinding:
    """A resolver that answers with loopback once, then with the metadata service: DNS rebinding."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[Address]:
        self.calls.append(host)
        return [LOOPBACK] if len(self.calls) == 1 else [METADATA]


class FailingOnce:
    """A resolver whose first lookup fails, as a DNS outage does; later ones answer with loopback."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[Address]:
        self.calls += 1
        if self.calls == 1:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [LOOPBACK]
