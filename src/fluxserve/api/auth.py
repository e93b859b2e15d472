"""Who is calling: the API key in ``Authorization: Bearer`` (OpenAI clients), ``x-key`` (BFL clients) or
``Authorization: Token`` (Replicate's documentation).

Routes declare what they need with ``Depends(caller)`` or ``Depends(admin)``; both answer 401
before the body is read when no valid key came, and :func:`admin` answers 403 to a generate key.
A request that repeats a credential header is refused (400): servers and proxies disagree on
which one counts.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.requests import Request

from fluxserve.accounts.keys import ANONYMOUS, Caller, Scope, looks_like_key
from fluxserve.accounts.keystore import KeyStore
from fluxserve.accounts.policy import anonymous_allowed
from fluxserve.api.deps import KeysDep, SettingsDep
from fluxserve.errors import AuthenticationFailed, ErrorCode, InvalidRequest, PermissionDenied
from fluxserve.settings import Settings
from fluxserve.telemetry import context

_bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer fsk_...")
_x_key = APIKeyHeader(name="x-key", auto_error=False, description="The same API key, as BFL's clients send it.")


_FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")
_CREDENTIALS = ("Authorization", "x-key")


def one_of_each_credential(headers: Headers) -> None:
    """Refuse a request with two Authorization or two x-key headers, even equal ones."""
    for name in _CREDENTIALS:
        if len(headers.getlist(name)) > 1:
            raise InvalidRequest(f"the request has more than one {name} header; send one", param=name)


def presented_key(bearer: HTTPAuthorizationCredentials | None, x_key: str | None) -> str | None:
    """The key the request carries, if any (an Authorization header that is not Bearer carries none)."""
    from_bearer = None if bearer is None else bearer.credentials.strip()
    from_x_key = None if x_key is None else x_key.strip()
    if from_bearer and from_x_key and from_bearer != from_x_key:
        raise InvalidRequest("the Authorization and x-key headers carry different keys; send one", param="x-key")
    return from_bearer or from_x_key or None


def token_scheme(authorization: str | None) -> HTTPAuthorizationCredentials | None:
    """``Authorization: Token <key>``, as Replicate's documentation and older clients send it."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "token" or not credentials.strip():
        return None
    return HTTPAuthorizationCredentials(scheme="Token", credentials=credentials.strip())


async def caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    x_key: Annotated[str | None, Security(_x_key)],
    settings: SettingsDep,
    keys: KeysDep,
) -> Caller:
    """The authenticated caller; anonymous only where the server runs without keys."""
    headers = request.headers
    one_of_each_credential(headers)
    presented = presented_key(bearer or token_scheme(headers.get("authorization")), x_key)
    forwarded = any(name in headers for name in _FORWARDED)
    authorization = headers.get("authorization") is not None
    # One hop to a thread for both database reads: the hop costs more than the reads (bench/auth_overhead.py).
    who = await asyncio.to_thread(identify, settings, keys, presented, forwarded=forwarded, authorization=authorization)
    context.key_id.set(who.owner)  # on this request's log lines (the task's context ends with the request)
    return who


def identify(
    settings: Settings, keys: KeyStore, presented: str | None, *, forwarded: bool, authorization: bool
) -> Caller:
    """Who a request with ``presented`` (its key, if any) comes from, or AuthenticationFailed."""
    open_server = anonymous_allowed(settings, keys)
    if open_server and not settings.no_auth and forwarded:
        # Open because it listens on loopback, yet a proxy forwarded this request from elsewhere.
        raise AuthenticationFailed(
            "this server has no API keys and serves its own machine only; a proxy forwarded this request, "
            "so create a key (fluxserve keys create) and send it",
            code=ErrorCode.MISSING_API_KEY,
        )
    # On an open server, clients that must send some key (the OpenAI SDK does) send anything: only
    # a value shaped like one of our keys is checked.
    if presented is None or (open_server and not looks_like_key(presented)):
        if open_server:
            return ANONYMOUS
        if authorization:
            raise AuthenticationFailed(
                "send the API key as Authorization: Bearer fsk_..., or in an x-key header",
                code=ErrorCode.INVALID_API_KEY,
            )
        raise AuthenticationFailed(
            "this server needs an API key: send Authorization: Bearer fsk_..., or x-key: fsk_...",
            code=ErrorCode.MISSING_API_KEY,
        )
    return Caller(keys.authenticate(presented))


CallerDep = Annotated[Caller, Depends(caller)]
"""A route parameter: the authenticated caller."""


async def admin(who: CallerDep) -> Caller:
    if not who.allows(Scope.ADMIN):
        raise PermissionDenied("this needs an admin key; this key may only generate", code=ErrorCode.INSUFFICIENT_SCOPE)
    return who
