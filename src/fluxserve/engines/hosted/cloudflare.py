"""Cloudflare Workers AI: FLUX.2 [dev], [klein] 4B and 9B, and FLUX.1 [schnell], one call per image.

Each image is one ``POST {base_url}/accounts/{account_id}/ai/run/{model}`` with the API token as a
bearer token. FLUX.2 models take multipart/form-data, even for a prompt alone: ``prompt``,
``input_image_0..3`` (PNG parts, each below 512x512), ``steps``, ``guidance``, ``width``,
``height``, ``seed``. FLUX.1 [schnell] takes JSON: ``prompt`` (up to 2048 characters), ``steps``
and ``seed``. The answer is Cloudflare's v4 envelope, the image in ``result.image`` as base64.
Facts from Cloudflare's model pages (developers.cloudflare.com/workers-ai/models/flux-2-dev and its
siblings), as the README's "Hosted models" section sums them up.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from PIL import Image

from fluxserve.engines.base import ResolvedRequest
from fluxserve.engines.hosted import calls
from fluxserve.engines.hosted.base import HostedEngine, HostedImage, Stage
from fluxserve.errors import (
    ContentModerated,
    Moderated,
    ProviderAuthFailed,
    ProviderBusy,
    ProviderError,
    ProviderOutOfCredit,
    ProviderRejectedRequest,
)

SCHNELL = "@cf/black-forest-labs/flux-1-schnell"
REFERENCE_SIDE_LIMIT = 512
"""Each side of a reference image must be below this."""
TILE = 512
DEFAULT_RETRY_AFTER = 30
MODERATED = 3030
"""Workers AI's code for a prompt, input or output its safety filter judged NSFW."""


@dataclass(frozen=True)
class TilePrice:
    """Workers AI's price per 512x512 tile of input (references) and of output."""

    input_usd: float
    output_usd: float
    per_step: bool


# Documented prices; klein-9b and schnell have none documented, so their cost is unknown (None).
PRICES = {
    "@cf/black-forest-labs/flux-2-dev": TilePrice(0.00021, 0.00041, per_step=True),
    "@cf/black-forest-labs/flux-2-klein-4b": TilePrice(0.000059, 0.000287, per_step=False),
}


def tiles(width: int, height: int) -> int:
    # Our reading of "per 512x512 tile": a started tile counts whole. It agrees with the documented
    # example (1024x1024 at 25 steps ~ $0.041 on flux-2-dev: 4 tiles x 25 x $0.00041).
    return math.ceil(width / TILE) * math.ceil(height / TILE)


def cost_usd(remote: str, request: ResolvedRequest, references: list[Image.Image]) -> float | None:
    """What one image of ``request`` costs on ``remote``, or None where no price is documented."""
    price = PRICES.get(remote)
    if price is None:
        return None
    tiles_in = sum(tiles(*image.size) for image in references)
    one_pass = tiles_in * price.input_usd + tiles(request.width, request.height) * price.output_usd
    return one_pass * (request.steps or 0) if price.per_step else one_pass


def below_reference_limit(image: Image.Image) -> Image.Image:
    """``image``, scaled (keeping its aspect ratio) so that both sides are below 512."""
    longest = max(image.size)
    if longest < REFERENCE_SIDE_LIMIT:
        return image
    scale = (REFERENCE_SIDE_LIMIT - 1) / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def png(image: Image.Image) -> bytes:
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class CloudflareEngine(HostedEngine):
    stages = ("submitted", "downloading")

    @property
    def concurrency(self) -> int:
        return self.options.cloudflare_concurrency

    def configured(self) -> bool:
        return bool(self.options.cloudflare_account_id and self.options.cloudflare_api_token)

    def missing_settings(self) -> str:
        return "cloudflare_account_id and cloudflare_api_token (or CLOUDFLARE_ACCOUNT_ID / CLOUDFLARE_API_TOKEN)"

    @property
    def provider(self) -> str:
        return self.model.provider

    def generate_one(
        self, request: ResolvedRequest, seed: int, stage: Stage, cancel: threading.Event | None
    ) -> HostedImage:
        # 1. Build the call (and refuse what Workers AI would refuse, before it is sent).
        references = [below_reference_limit(image) for image in request.references]
        if self.model.remote == SCHNELL:
            call = self._schnell_call(request, seed)
        else:
            call = self._flux2_call(request, seed, references)
        # 2. Send it: retried only where a retry cannot bill twice.
        stage("submitted")
        response = calls.create(self.client, call, provider=self.provider, cancel=cancel)
        # 3. Read the image out of the envelope, or say what went wrong.
        stage("downloading")
        image = self._image(response)
        return HostedImage(image, cost_usd(self.model.remote, request, references))

    def _url(self) -> str:
        account = quote(self.options.cloudflare_account_id or "", safe="")
        return f"{self.options.cloudflare_base_url.rstrip('/')}/accounts/{account}/ai/run/{self.model.remote}"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.options.cloudflare_api_token}", "accept": "application/json"}

    def _flux2_call(self, request: ResolvedRequest, seed: int, references: list[Image.Image]) -> httpx.Request:
        parts: list[tuple[str, tuple[str | None, str | bytes] | tuple[str, bytes, str]]] = [
            ("prompt", (None, request.prompt))
        ]
        for index, image in enumerate(references):
            name = f"input_image_{index}"
            parts.append((name, (f"{name}.png", png(image), "image/png")))
        if not self.capabilities.fixed_steps:  # klein always runs 4 steps: nothing to send
            parts.append(("steps", (None, str(request.steps))))
        if request.guidance is not None:
            parts.append(("guidance", (None, repr(float(request.guidance)))))
        parts += [
            ("width", (None, str(request.width))),
            ("height", (None, str(request.height))),
            ("seed", (None, str(seed))),
        ]
        # Every field is a file-style part, so httpx sends multipart even for a prompt alone.
        return self.client.build_request("POST", self._url(), headers=self._headers(), files=parts)

    def _schnell_call(self, request: ResolvedRequest, seed: int) -> httpx.Request:
        # The 2048-character prompt limit is a capability (max_prompt_chars): validate() refused longer.
        body = {"prompt": request.prompt, "steps": request.steps, "seed": seed}
        return self.client.build_request("POST", self._url(), headers=self._headers(), json=body)

    def _image(self, response: httpx.Response) -> Image.Image:
        envelope = _envelope(response)
        if response.status_code != 200 or envelope.get("success") is False:
            code, message = _first_error(envelope)
            raise self._error(response.status_code, code, calls.retry_after(response), message)
        result = envelope.get("result")
        encoded = result.get("image") if isinstance(result, dict) else None
        if not isinstance(encoded, str):
            raise ProviderError(
                f"Workers AI answered {self.model.remote} without an image",
                provider=self.provider,
                provider_code="no_image",
            )
        try:
            data = io.BytesIO(base64.b64decode(encoded, validate=True))
            with Image.open(data, formats=("PNG", "JPEG", "WEBP")) as raw:
                return raw.convert("RGB")
        except (binascii.Error, OSError, ValueError):
            raise ProviderError(
                f"Workers AI answered {self.model.remote} with an image that cannot be decoded",
                provider=self.provider,
                provider_code="bad_image",
            ) from None

    def _error(self, status: int, code: int | None, retry_after: float | None, message: str = "") -> ProviderError:
        """Workers AI's status and error code as a fluxserve error, in words of our own (its ``message``
        is read, for which side its moderation refused, never echoed)."""
        remote, provider = self.model.remote, self.provider
        label = f"HTTP {status}" + (f", code {code}" if code is not None else "")
        provider_code = str(code) if code is not None else f"http_{status}"
        if code == MODERATED:
            side = moderation_side(message)
            return ContentModerated(
                moderated(side, remote, label), provider=provider, provider_code=provider_code, moderated=side
            )
        if status == 403 and code == 5035:
            return ProviderAuthFailed(
                f"Workers AI offers {remote} only on a paid Workers plan, which this account lacks ({label})",
                provider=provider,
                provider_code=provider_code,
            )
        if status in (401, 403):
            return ProviderAuthFailed(
                f"Workers AI refused the server's credentials ({label}): check cloudflare_account_id and "
                "that cloudflare_api_token is valid with Workers AI permission",
                provider=provider,
                provider_code=provider_code,
            )
        if status == 429 and code == 3036:
            return ProviderOutOfCredit(
                f"this Cloudflare account has used its daily free Workers AI allocation ({label}); "
                "try again tomorrow, or move the account to a paid Workers plan",
                provider=provider,
                provider_code=provider_code,
            )
        if status == 429:
            wait = DEFAULT_RETRY_AFTER if retry_after is None else max(1, math.ceil(retry_after))
            reason = "is out of capacity for" if code == 3040 else "is rate-limiting this account's calls to"
            return ProviderBusy(
                f"Workers AI {reason} {remote} ({label}); try again in {wait} s",
                provider=provider,
                provider_code=provider_code,
                retry_after=wait,
            )
        if status == 413 or code == 3006:
            return ProviderRejectedRequest(
                f"Workers AI found the request to {remote} too large ({label}); send smaller reference images",
                provider=provider,
                provider_code=provider_code,
            )
        if status == 408 or code in (3007, 3008):
            return ProviderError(
                f"Workers AI timed out running {remote} ({label}); try again, perhaps with fewer steps or a "
                "smaller size",
                provider=provider,
                provider_code=provider_code,
            )
        if status == 404 or code == 3042:
            return ProviderError(
                f"Workers AI does not offer {remote} here ({label}); check cloudflare_base_url and "
                "cloudflare_account_id",
                provider=provider,
                provider_code=provider_code,
            )
        if 400 <= status < 500:
            return ProviderRejectedRequest(
                f"Workers AI rejected the request to {remote} as invalid ({label}); fluxserve's checks let it "
                "through, so please report it",
                provider=provider,
                provider_code=provider_code,
            )
        return ProviderError(
            f"Workers AI failed running {remote} ({label}); not retried, since it may have billed the work",
            provider=provider,
            provider_code=provider_code,
        )


def _envelope(response: httpx.Response) -> dict[str, Any]:
    """The v4 envelope, or {} when the body is not one (a proxy's page, for example)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _first_error(envelope: dict[str, Any]) -> tuple[int | None, str]:
    """The first error's code (None when there is none, or it is not a number) and message."""
    errors = envelope.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code, message = errors[0].get("code"), errors[0].get("message")
        text = message if isinstance(message, str) else ""
        if isinstance(code, int) and not isinstance(code, bool):
            return code, text
        return None, text
    return None, ""


def moderation_side(message: str) -> Moderated | None:
    """What a 3030 refusal refused: Workers AI's message says whether the input or the output was NSFW."""
    said = message.lower()
    if "output" in said:
        return Moderated.OUTPUT
    if "input" in said or "prompt" in said:
        return Moderated.INPUT
    return None


def moderated(side: Moderated | None, remote: str, label: str) -> str:
    """Our words for a 3030 refusal of ``side`` (None: the message did not say)."""
    if side is Moderated.OUTPUT:
        return (
            f"Workers AI's safety filter withheld the image {remote} generated ({label}); change the prompt and retry"
        )
    if side is Moderated.INPUT:
        return (
            f"Workers AI's safety filter refused the request to {remote}: the prompt or an input image ({label}); "
            "change it and retry"
        )
    return f"Workers AI's safety filter refused the request to {remote} or its result ({label}); change the prompt"
