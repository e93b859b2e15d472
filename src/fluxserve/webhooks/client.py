"""The HTTP client webhooks are sent with: it connects only to an address it has checked.

A host name is resolved once per connection, every address it resolves to is checked (see
:mod:`fluxserve.webhooks.addresses`) and the connection is made to one of those very
addresses, so a name that answers differently a moment later (DNS rebinding) cannot move a
delivery to a metadata service. The URL is otherwise untouched: the ``Host`` header, and for
https the SNI name and the certificate check, stay those of the host name in the URL. Proxies
from the environment are not used, since a proxy would decide where the delivery goes.

The seam is httpcore's network backend: its ``connect_tcp`` is handed the URL's host and port.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import httpcore
import httpx

from fluxserve.webhooks.addresses import Address, Resolver, forbidden, literal, refusal, resolve


class ForbiddenAddress(Exception):
    """The host of a webhook URL is, or resolves to, an address no webhook is sent to."""


class CheckedBackend(httpcore.NetworkBackend):
    """Resolves each host once, refuses it if any of its addresses is forbidden, connects to a checked one."""

    def __init__(self, resolver: Resolver = resolve) -> None:
        self._resolver = resolver
        self._tcp = httpcore.SyncBackend()

    def addresses(self, host: str, port: int) -> list[Address]:
        """The checked addresses of ``host``; a name that does not resolve is a connection error (retried)."""
        written = literal(host)
        try:
            found = [written] if written is not None else self._resolver(host, port)
        except OSError as error:
            raise httpcore.ConnectError(f"could not resolve {host}: {error}") from error
        if not found:
            raise httpcore.ConnectError(f"could not resolve {host}: no addresses")
        for address in found:
            if forbidden(address):
                raise ForbiddenAddress(refusal(host, address))
        return found

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in self.addresses(host, port):
            try:
                return self._tcp.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None  # addresses() returns at least one
        raise failure


class CheckedTransport(httpx.HTTPTransport):
    """httpx's own transport, its connection pool built on a :class:`CheckedBackend`."""

    def __init__(self, resolver: Resolver = resolve, ssl_context: ssl.SSLContext | None = None) -> None:
        context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        super().__init__(verify=context, trust_env=False)
        # httpx builds its pool without a backend argument: replace it with one on the checked backend.
        self._pool = httpcore.ConnectionPool(ssl_context=context, network_backend=CheckedBackend(resolver))


def webhook_client(
    timeout: float, resolver: Resolver = resolve, ssl_context: ssl.SSLContext | None = None
) -> httpx.Client:
    """A client that posts only to checked addresses, follows no redirect and ignores proxy variables."""
    return httpx.Client(
        transport=CheckedTransport(resolver, ssl_context), timeout=timeout, follow_redirects=False, trust_env=False
    )
