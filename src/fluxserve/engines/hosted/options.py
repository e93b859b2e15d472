"""How to reach the hosted providers: credentials, addresses, timeouts, concurrency."""

from __future__ import annotations

from dataclasses import dataclass

from fluxserve.defaults import (
    BFL_BASE_URLS,
    BFL_CONCURRENCY,
    CLOUDFLARE_BASE_URL,
    CLOUDFLARE_CONCURRENCY,
    PROVIDER_TIMEOUT_SECONDS,
)


@dataclass(frozen=True)
class ProviderOptions:
    cloudflare_account_id: str | None = None
    cloudflare_api_token: str | None = None
    cloudflare_base_url: str = CLOUDFLARE_BASE_URL
    cloudflare_concurrency: int = CLOUDFLARE_CONCURRENCY
    bfl_api_key: str | None = None
    bfl_base_url: str = BFL_BASE_URLS["global"]
    bfl_concurrency: int = BFL_CONCURRENCY
    timeout_seconds: float = PROVIDER_TIMEOUT_SECONDS
    poll_min_seconds: float = 0.5
    poll_max_seconds: float = 10.0
