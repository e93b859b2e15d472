"""The content filter: a safety check that judges images, and where the server applies it.

A :class:`SafetyCheck` is one method, :meth:`~SafetyCheck.judge`: images in, one :class:`Verdict` each
out. :class:`ImageClassifier` is the built-in one: an image classifier run through transformers (by
default a ViT fine-tuned to tell ``normal`` from ``nsfw``), whose probabilities of the unsafe labels,
added up, are compared with a threshold. :class:`ContentFilter` applies a check to reference images,
to outputs, or to both, and raises :class:`~fluxserve.errors.ContentBlocked` in words of our own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from fluxserve.defaults import ContentFilterScope
from fluxserve.errors import ContentBlocked, InvalidRequest, MissingExtra, ModelUnavailable, Moderated


@dataclass(frozen=True)
class Verdict:
    """What a check made of one image: ``score`` is the probability of the unsafe labels."""

    flagged: bool
    score: float
    label: str
    """The unsafe label (or labels, joined by ``+``) the score is of."""


class SafetyCheck(Protocol):
    """Judges images; safe to call from several threads."""

    def judge(self, images: Sequence[Image.Image]) -> list[Verdict]: ...


@dataclass(frozen=True)
class ContentFilter:
    """A safety check and the images it applies to (``scope``); ``check`` is None when the filter is off."""

    check: SafetyCheck | None = None
    scope: ContentFilterScope = "off"

    @property
    def judges_references(self) -> bool:
        return self.check is not None and self.scope in ("refs", "both")

    @property
    def judges_outputs(self) -> bool:
        return self.check is not None and self.scope in ("outputs", "both")

    def check_references(self, images: Sequence[Image.Image], *, param: str = "image") -> None:
        """Raise :class:`ContentBlocked` naming the first reference image the check flags."""
        if not self.judges_references or not images:
            return
        assert self.check is not None
        for index, verdict in enumerate(self.check.judge(images)):
            if verdict.flagged:
                raise ContentBlocked(
                    f"image[{index}] was refused by this server's content filter ({_why(verdict)}); "
                    "send a different image",
                    moderated=Moderated.INPUT,
                    param=param,
                )

    def check_outputs(self, images: Sequence[Image.Image]) -> None:
        """Raise :class:`ContentBlocked` when the check flags any generated image: then none is kept."""
        if not self.judges_outputs or not images:
            return
        assert self.check is not None
        for index, verdict in enumerate(self.check.judge(images)):
            if verdict.flagged:
                raise ContentBlocked(
                    f"this server's content filter withheld the generated image {index + 1} of {len(images)} "
                    f"({_why(verdict)}); no image of this request was stored: change the prompt and try again",
                    moderated=Moderated.OUTPUT,
                )

    def passes(self, image: Image.Image) -> bool:
        """Whether a step preview or partial image may be shown (always, unless outputs are judged)."""
        if not self.judges_outputs:
            return True
        assert self.check is not None
        return not self.check.judge([image])[0].flagged


OFF = ContentFilter()


def _why(verdict: Verdict) -> str:
    return f"{verdict.label} score {verdict.score:.2f}"


class ImageClassifier:
    """A transformers image classifier as a :class:`SafetyCheck`.

    ``model`` is a Hugging Face repo id or a local folder; an image is flagged when the probabilities of
    ``labels`` add up to ``threshold`` or more. :meth:`load` fetches the weights the way fluxserve
    fetches models: from the Hugging Face cache, downloaded into it only when ``allow_download`` is on
    and the hub is not offline.
    """

    def __init__(
        self,
        model: str,
        *,
        threshold: float,
        labels: Sequence[str],
        allow_download: bool,
        device: str | None = None,
    ) -> None:
        self.model_name, self.threshold, self.labels = model, threshold, tuple(labels)
        self._allow_download, self._device = allow_download, device
        self._lock = threading.Lock()
        self._torch: Any = None
        self._processor: Any = None
        self._model: Any = None
        self._unsafe: list[int] = []

    def load(self) -> ImageClassifier:
        """Load the processor and weights; an unknown label or missing weights say what to do."""
        try:
            import torch
            import transformers
        except ImportError as error:
            raise MissingExtra("diffusers", "the content filter", error.name or "a dependency") from None
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        source = self._source()
        processor = transformers.AutoImageProcessor.from_pretrained(source)
        model = transformers.AutoModelForImageClassification.from_pretrained(source)
        device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._torch, self._processor, self._model = torch, processor, model.to(device).eval()
        id2label = {int(index): str(label) for index, label in model.config.id2label.items()}
        unknown = [label for label in self.labels if label not in id2label.values()]
        if unknown:
            known = ", ".join(sorted(id2label.values()))
            raise InvalidRequest(
                f"content_filter_labels names {', '.join(unknown)}, which {self.model_name} does not have "
                f"(its labels: {known})",
                param="content_filter_labels",
            )
        self._unsafe = [index for index, label in id2label.items() if label in self.labels]
        return self

    def _source(self) -> str:
        """A local folder as is; a repo id resolved to its snapshot in the Hugging Face cache."""
        if Path(self.model_name).is_dir():
            return self.model_name
        from huggingface_hub import constants, snapshot_download

        try:
            return str(snapshot_download(self.model_name, local_files_only=True))
        except Exception as error:
            missing: Exception = error
        if self._allow_download and not constants.HF_HUB_OFFLINE:
            try:
                return str(snapshot_download(self.model_name))
            except Exception as error:
                missing = error
        why = (
            "downloads are off"
            if not self._allow_download or constants.HF_HUB_OFFLINE
            else f"the download failed: {missing}"
        )
        raise ModelUnavailable(
            f"the content filter's model {self.model_name!r} is not in the Hugging Face cache at "
            f"{constants.HF_HUB_CACHE} and {why}. Download it with `hf download {self.model_name}`, "
            "or set content_filter_model to a local folder"
        )

    def judge(self, images: Sequence[Image.Image]) -> list[Verdict]:
        if self._model is None:
            raise RuntimeError("ImageClassifier.judge() before load()")
        torch = self._torch
        rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        with self._lock, torch.inference_mode():
            inputs = self._processor(images=rgb, return_tensors="pt").to(self._model.device)
            probabilities = self._model(**inputs).logits.float().softmax(dim=-1)
            scores = probabilities[:, self._unsafe].sum(dim=-1).tolist()
        label = "+".join(self.labels)
        return [Verdict(flagged=score >= self.threshold, score=float(score), label=label) for score in scores]
