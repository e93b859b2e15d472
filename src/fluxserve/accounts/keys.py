"""API keys: their format, how they are hashed and compared, and what a key allows.

A key is ``fsk_`` and 48 random letters and digits (about 285 bits). Its first 12 characters
(the prefix) are stored in the clear to find the key and to name it in listings; the whole key
is stored only as a SHA-256 digest (a slow hash adds nothing for random keys of this length)
and compared with :func:`hmac.compare_digest`, whose time does not depend on where two digests
first differ.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fluxserve.engines.loras import MAX_NAME_CHARS
from fluxserve.errors import ErrorCode, InvalidRequest, PermissionDenied
from fluxserve.numbers import check_limit

KEY_PREFIX = "fsk_"
PREFIX_LENGTH = 12
_RANDOM_LENGTH = 48
_ALPHABET = string.ascii_letters + string.digits
MAX_RATE = 1_000_000
"""The largest rpm or concurrency a key may have (omit the limit for none)."""
MAX_QUOTA_MEGAPIXELS = 1e12
MAX_KEY_LORAS = 100
"""The most adapter names one key's allow-list may hold."""
MAX_LORA_NAME_CHARS = MAX_NAME_CHARS
KEY_FORMAT = re.compile(r"fsk_[A-Za-z0-9]{48}")


class Scope(StrEnum):
    GENERATE = "generate"
    """Generate images and use the key's own jobs, files and usage."""
    ADMIN = "admin"
    """Everything a generate key may do, plus managing keys and reading every key's usage."""

    def allows(self, needed: Scope) -> bool:
        return self is Scope.ADMIN or needed is Scope.GENERATE


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True)
class KeyLimits:
    """What one key may use; None means no limit."""

    rpm: int | None = None
    """Submissions (requests that make a job) per rolling minute."""
    concurrency: int | None = None
    """Jobs queued or running at once."""
    quota_megapixels: float | None = None
    """Input plus output megapixels (1024 x 1024 pixels) per period."""
    quota_period: Period | None = None
    loras: tuple[str, ...] | None = None
    """The LoRA adapters (names exactly as requests send them) this key may use; None: every one."""

    def __post_init__(self) -> None:
        """Every way of making limits ends here: no limit is 0, negative, fractional, nan or infinite."""
        if self.loras is not None:
            check_lora_names(self.loras)
        for param, value in (("rpm", self.rpm), ("concurrency", self.concurrency)):
            whole = isinstance(value, int) and not isinstance(value, bool)
            if value is not None and not (whole and 1 <= value <= MAX_RATE):
                raise InvalidRequest(
                    f"{param} must be a whole number from 1 to {MAX_RATE}, not {value!r}; omit it for no limit",
                    param=param,
                )
        check_limit(self.quota_megapixels, param="quota_megapixels", high=MAX_QUOTA_MEGAPIXELS)


def check_lora_names(names: object) -> None:
    """An allow-list of adapter names: at most :data:`MAX_KEY_LORAS` distinct, non-empty names of
    at most :data:`MAX_LORA_NAME_CHARS` characters, no spaces at their ends and no control characters."""
    if not isinstance(names, tuple) or len(names) > MAX_KEY_LORAS:
        raise InvalidRequest(f"loras must be a list of at most {MAX_KEY_LORAS} adapter names", param="loras")
    for index, name in enumerate(names):
        printable = isinstance(name, str) and name.isprintable() and name == name.strip()
        if not printable or not 1 <= len(name) <= MAX_LORA_NAME_CHARS:
            raise InvalidRequest(
                f"loras[{index}] must be an adapter name of 1-{MAX_LORA_NAME_CHARS} printable characters "
                f"without spaces at its ends (as GET /v1/loras lists them), not {name!r}",
                param=f"loras[{index}]",
            )
        if name in names[:index]:
            raise InvalidRequest(f"loras names {name!r} twice", param=f"loras[{index}]")


def check_adapters_allowed(names: Iterable[str], allowed: tuple[str, ...] | None) -> None:
    """:class:`PermissionDenied` naming the first of ``names`` a key limited to ``allowed`` may not use."""
    if allowed is None:
        return
    for index, name in enumerate(names):
        if name not in allowed:
            shown = ", ".join(allowed[:10]) + (", ..." if len(allowed) > 10 else "")
            may = f"it may use {shown}" if allowed else "it may use none"
            raise PermissionDenied(
                f"this API key may not use the LoRA adapter {name!r}; {may} (GET /v1/loras lists them)",
                code=ErrorCode.ADAPTER_NOT_ALLOWED,
                param=f"loras[{index}].name",
            )


@dataclass(frozen=True)
class ApiKey:
    id: str
    prefix: str
    name: str
    scope: Scope
    created_at: float
    limits: KeyLimits = field(default_factory=KeyLimits)
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def describe(self, now: float) -> dict[str, Any]:
        """The key as listings show it (never the key itself: it is not kept)."""
        limits = self.limits
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scope": self.scope.value,
            "status": self.status(now),
            "rpm": limits.rpm,
            "concurrency": limits.concurrency,
            "quota_megapixels": limits.quota_megapixels,
            "quota_period": None if limits.quota_period is None else limits.quota_period.value,
            "loras": None if limits.loras is None else list(limits.loras),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a key, or nobody on a server that runs without keys."""

    key: ApiKey | None

    @property
    def owner(self) -> str | None:
        """The id that jobs made by this caller are filed under (None: no key)."""
        return None if self.key is None else self.key.id

    @property
    def allowed_loras(self) -> tuple[str, ...] | None:
        """The adapters this caller may use; None: every one (no key, or a key without a list)."""
        return None if self.key is None else self.key.limits.loras

    def allows(self, needed: Scope) -> bool:
        # Without keys the server is open on purpose (loopback, or --no-auth): nothing to guard.
        return self.key is None or self.key.scope.allows(needed)


ANONYMOUS = Caller(key=None)


def new_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def prefix_of(key: str) -> str:
    return key[:PREFIX_LENGTH]


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    """Whether ``key`` is the one ``stored_hash`` was made from, in time independent of the contents."""
    return hmac.compare_digest(hash_key(key).encode("ascii"), stored_hash.encode("ascii"))
