"""When a server may run without keys: on loopback before any key exists, or when told to.

A server reachable from a network with nobody able to authenticate would be open to anyone, so
it refuses to start, unless ``no_auth`` says that is what its operator wants (a warning is
logged at every start then).
"""

from __future__ import annotations

import ipaddress
import logging

from fluxserve.accounts.keystore import KeyStore
from fluxserve.errors import InsecureConfiguration
from fluxserve.settings import Settings

log = logging.getLogger("fluxserve.auth")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (a name other than localhost: no)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def anonymous_allowed(settings: Settings, keys: KeyStore) -> bool:
    """Whether a request without a key is served."""
    return settings.no_auth or (is_loopback(settings.host) and not keys.any())


def check_access(settings: Settings, keys: KeyStore) -> None:
    """At start-up: refuse an open server on a network address; say how requests are authenticated."""
    if settings.no_auth:
        log.warning(
            "authentication is OFF (--no-auth): anyone who can reach %s can generate images, see every "
            "job made without a key and manage keys",
            settings.host,
        )
        return
    active = keys.active()
    if active:
        log.info("API keys required (%d active)", len(active))
        return
    if not is_loopback(settings.host):
        raise InsecureConfiguration(
            f"refusing to listen on {settings.host} with no active API key: anyone on the network could use it. "
            "Create a key first (fluxserve keys create --name NAME --data-dir ...), or listen on 127.0.0.1, "
            "or start with --no-auth to serve without keys on purpose"
        )
    if keys.any():
        log.warning("every API key is revoked or expired: no request will be served until a key is created")
    else:
        log.warning(
            "no API keys yet: serving without authentication, to this machine only (%s); "
            "the first key created turns authentication on",
            settings.host,
        )
