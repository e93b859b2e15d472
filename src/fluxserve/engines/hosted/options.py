"""How to reach the hosted providers: credentials, addresses, timeouts, concurrency."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderOptions:
    cloudflare_account_id: str | None = None
    cloudflare_api_token: str | None = None
    cloudflare_base_url: str = "https://api.cloudflare.com/client/v4"
    cloudflare_concurrency: int = 4
    bfl_api_key: str | None = None
    bfl_base_url: str = "https://api.bfl.ai"
    bfl_concurrency: int = 24
    timeout_seconds: float = 120.0
    poll_min_seconds: float = 0.5
    poll_max_seconds: float = 10.0
