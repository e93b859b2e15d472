"""Black Forest Labs' API: submit a task, poll its ``polling_url`` with backoff, download the result at once.

One image is three calls, reported as three stages:

1. ``submitted``: ``POST {base_url}/v1/{endpoint}`` with ``x-key`` and a JSON body; the answer names
   the task, its ``polling_url`` and its cost in credits. This is the paid call: :func:`calls.create`
   never repeats it where BFL may have started the work.
2. ``polling``: ``GET polling_url`` (with ``x-key``), waiting ``poll_min_seconds`` doubling up to
   ``poll_max_seconds`` between polls, until the task is ``Ready`` or has ended otherwise.
3. ``downloading``: ``GET result.sample``, a signed URL that expires after about 10 minutes (no key).

A cancel stops the polling; BFL may still finish the task and bill it.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

from fluxserve.engines.base import ResolvedRequest
from fluxserve.engines.hosted import calls
from fluxserve.engines.hosted.base import HostedEngine, HostedImage, Stage
from fluxserve.engines.hosted.catalog import BFL
from fluxserve.errors import (
    ContentModerated,
    Moderated,
    ProviderAuthFailed,
    ProviderBusy,
    ProviderError,
    ProviderOutOfCredit,
    ProviderRejectedRequest,
)

log = logging.getLogger("fluxserve.engines.bfl")

USD_PER_CREDIT = 0.01
"""BFL's price of one credit (docs.bfl.ai, Pricing: "1 credit = $0.01 USD")."""

SAFETY_TOLERANCE = 2
"""BFL's default (0 strictest to 5), sent when the client sets none."""
BUSY_RETRY_SECONDS = 30
"""What to tell a client after a 429 without Retry-After: a task slot frees when a task ends."""
MODERATED = {
    "Request Moderated": (
        "BFL's moderation refused the request (the prompt or a reference image); change it and retry",
        Moderated.INPUT,
    ),
    "Content Moderated": (
        "BFL's moderation withheld the generated image; change the prompt and retry",
        Moderated.OUTPUT,
    ),
}
"""BFL's moderated statuses (docs.bfl.ai, Errors: Request Moderated is the input, before processing began;
Content Moderated the output): our words, and what was refused."""


@dataclass(frozen=True)
class Task:
    """BFL's answer to a submit: the task, where to poll it, and what it costs (in BFL credits)."""

    id: str
    polling_url: str
    credits: float | None
    input_megapixels: float | None
    output_megapixels: float | None


@dataclass(frozen=True)
class BflImage(HostedImage):
    """An image and the task that made it (its credits and megapixels, for usage)."""

    task: Task | None = None


def reference_field(index: int) -> str:
    """``input_image`` for the first reference, then ``input_image_2`` .. ``input_image_8``."""
    return "input_image" if index == 0 else f"input_image_{index + 1}"


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def output_format(hint: str | None) -> str:
    """What to ask BFL for. fluxserve re-encodes every result into the client's format: JPEG when the
    client wants JPEG (a smaller download for a lossy result anyway), lossless PNG otherwise, so a
    png or webp result never carries a JPEG step the client did not ask for."""
    return "jpeg" if hint == "jpeg" else "png"


class BflEngine(HostedEngine):
    stages = ("submitted", "polling", "downloading")
    give_up_after_seconds = 600.0
    """How long a task may stay Pending: its result URL would expire after about as long."""

    @property
    def concurrency(self) -> int:
        return self.options.bfl_concurrency

    def configured(self) -> bool:
        return bool(self.options.bfl_api_key)

    def missing_settings(self) -> str:
        return "bfl_api_key (or BFL_API_KEY)"

    def generate_one(
        self, request: ResolvedRequest, seed: int, stage: Stage, cancel: threading.Event | None
    ) -> HostedImage:
        task = self._submit(request, seed, cancel)
        stage("submitted")
        sample = self._wait_until_ready(task, stage, cancel)
        stage("downloading")
        image, source = self._download(sample, cancel)
        log.info("BFL task %s used %s credits", task.id, task.credits)
        cost = None if task.credits is None else round(task.credits * USD_PER_CREDIT, 6)
        return BflImage(image, cost_usd=cost, source=source, task=task)

    # -- 1. submit ---------------------------------------------------------------------------
    def body(self, request: ResolvedRequest, seed: int) -> dict[str, Any]:
        """The JSON BFL documents for this model's endpoint (never a webhook: we poll)."""
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "seed": seed,
            "width": request.width,
            "height": request.height,
            "safety_tolerance": SAFETY_TOLERANCE if request.safety_tolerance is None else request.safety_tolerance,
            "output_format": output_format(request.output_format),
        }
        for index, reference in enumerate(request.references):
            body[reference_field(index)] = png_base64(reference)
        caps = self.capabilities
        if caps.default_steps:  # flex: the client's steps and guidance; the others choose their own
            body["steps"] = request.steps
        if caps.guidance:
            body["guidance"] = request.guidance
        return body

    def _headers(self) -> dict[str, str]:
        assert self.options.bfl_api_key is not None
        return {"x-key": self.options.bfl_api_key, "accept": "application/json"}

    def _submit(self, request: ResolvedRequest, seed: int, cancel: threading.Event | None) -> Task:
        url = f"{self.options.bfl_base_url}/v1/{self.model.remote}"
        sent = self.client.build_request("POST", url, json=self.body(request, seed), headers=self._headers())
        response = calls.create(self.client, sent, provider=BFL, cancel=cancel)
        if response.status_code != 200:
            raise submit_error(response)
        answer = _json_object(response, "the submit")
        task_id, polling_url = answer.get("id"), answer.get("polling_url")
        if not isinstance(task_id, str) or not isinstance(polling_url, str):
            raise _unexpected("the submit answer has no task id or polling_url")
        self._check_polling_url(polling_url)
        return Task(
            task_id, polling_url, _number(answer, "cost"), _number(answer, "input_mp"), _number(answer, "output_mp")
        )

    def _check_polling_url(self, url: str) -> None:
        """The key goes with every poll: never to a URL that is not http(s), nor in clear from an https setup."""
        scheme = urlsplit(url).scheme
        base_scheme = urlsplit(self.options.bfl_base_url).scheme
        if scheme not in ("http", "https") or (base_scheme == "https" and scheme != "https"):
            raise _unexpected("the submit answer's polling_url is not an https URL")

    # -- 2. poll -----------------------------------------------------------------------------
    def _wait_until_ready(self, task: Task, stage: Stage, cancel: threading.Event | None) -> str:
        """Poll with backoff until the task is Ready; return its result's signed URL."""
        delay = self.options.poll_min_seconds
        deadline = time.monotonic() + self.give_up_after_seconds
        calls.pause(delay, cancel, BFL)
        stage("polling")
        while True:
            status, answer = self._poll(task, cancel)
            if status == "Ready":
                return _sample_url(answer)
            if status != "Pending":
                raise task_error(status, task.id)
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"BFL task {task.id} was still pending after {self.give_up_after_seconds:g} s; "
                    "it may still finish and be billed",
                    provider=BFL,
                    provider_code="Pending",
                )
            delay = min(delay * 2, self.options.poll_max_seconds)
            calls.pause(delay, cancel, BFL)

    def _poll(self, task: Task, cancel: threading.Event | None) -> tuple[str, dict[str, Any]]:
        sent = self.client.build_request("GET", task.polling_url, headers=self._headers())
        response = calls.fetch(self.client, sent, provider=BFL, cancel=cancel)
        if response.status_code in (401, 403):
            raise ProviderAuthFailed(
                "BFL refused the server's API key while polling; check bfl_api_key (BFL_API_KEY)",
                provider=BFL,
                provider_code=str(response.status_code),
            )
        if response.status_code == 404:
            return "Task not found", {}
        if response.status_code != 200:
            raise ProviderError(
                f"polling BFL task {task.id} kept failing (HTTP {response.status_code}); it may still finish "
                "and be billed",
                provider=BFL,
                provider_code=str(response.status_code),
            )
        answer = _json_object(response, "a poll")
        status = answer.get("status")
        if not isinstance(status, str):
            raise _unexpected("a poll answer has no status")
        return status, answer

    # -- 3. download -------------------------------------------------------------------------
    def _download(self, url: str, cancel: threading.Event | None) -> tuple[Image.Image, bytes]:
        """The result and its file as sent, fetched without the key: the signed URL is its own credential."""
        response = calls.fetch(self.client, self.client.build_request("GET", url), provider=BFL, cancel=cancel)
        if response.status_code in (403, 404, 410):
            raise ProviderError(
                f"BFL's result URL answered HTTP {response.status_code}: it expired or was withdrawn before "
                "the download; generate again",
                provider=BFL,
                provider_code="result_expired",
            )
        if response.status_code != 200:
            raise ProviderError(
                f"downloading the result from BFL failed (HTTP {response.status_code})",
                provider=BFL,
                provider_code=str(response.status_code),
            )
        try:
            with Image.open(io.BytesIO(response.content)) as opened:
                return opened.convert("RGB"), response.content
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            raise _unexpected("the downloaded result is not an image") from None


def submit_error(response: httpx.Response) -> ProviderError:
    """The error for a submit that BFL refused; our message, never its body."""
    status = response.status_code
    code = str(status)
    if status in (401, 403):
        return ProviderAuthFailed(
            f"BFL refused the server's API key (HTTP {status}); check bfl_api_key (BFL_API_KEY)",
            provider=BFL,
            provider_code=code,
        )
    if status == 402:
        return ProviderOutOfCredit(
            "the BFL account has insufficient credits (HTTP 402); add credits at BFL and retry",
            provider=BFL,
            provider_code=code,
        )
    if status in (400, 422):
        return ProviderRejectedRequest(
            f"BFL rejected the request as invalid (HTTP {status}); check the size, references and settings",
            provider=BFL,
            provider_code=code,
        )
    if status == 429:
        wait = calls.retry_after(response)
        seconds = BUSY_RETRY_SECONDS if wait is None else max(1, math.ceil(wait))
        return ProviderBusy(
            f"the BFL account has as many tasks in flight as it may (HTTP 429); retry in {seconds} s",
            provider=BFL,
            provider_code=code,
            retry_after=seconds,
        )
    if status >= 500:
        return ProviderError(
            f"BFL failed while accepting the task (HTTP {status}); not retried, since it may have started "
            "(and billed) the work",
            provider=BFL,
            provider_code=code,
        )
    return ProviderError(f"BFL answered the submit with HTTP {status}", provider=BFL, provider_code=code)


def task_error(status: str, task_id: str) -> ProviderError:
    """The error for a task that ended in anything but Ready."""
    if status in MODERATED:
        message, moderated = MODERATED[status]
        return ContentModerated(message, provider=BFL, provider_code=status, moderated=moderated)
    if status == "Error":
        return ProviderError(f"BFL task {task_id} failed at BFL (status Error)", provider=BFL, provider_code=status)
    if status == "Task not found":
        return ProviderError(
            f"BFL no longer knows task {task_id} (status Task not found)", provider=BFL, provider_code=status
        )
    return _unexpected("a poll answered an undocumented status")


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise _unexpected(f"{what} did not answer a JSON object")
    return answer


def _number(answer: dict[str, Any], field: str) -> float | None:
    value = answer.get(field)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sample_url(answer: dict[str, Any]) -> str:
    result = answer.get("result")
    sample = result.get("sample") if isinstance(result, dict) else None
    if not isinstance(sample, str) or urlsplit(sample).scheme not in ("http", "https"):
        raise _unexpected("a Ready task has no result.sample URL")
    return sample


def _unexpected(what: str) -> ProviderError:
    return ProviderError(f"BFL's answer was not understood: {what}", provider=BFL, provider_code="unexpected_response")
