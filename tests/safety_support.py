"""The content filter's test model: a tiny random-weight ViT classifier with the config shape of the default
one (labels ``normal`` and ``nsfw``), saved offline and loaded through the real path (``classifier_dir`` in
conftest builds it once a session).

The threshold decides the outcome whatever the random weights say: 0 blocks every image (a
probability is never below 0), 2 passes every one (a probability never reaches 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BLOCK_ALL, PASS_ALL = 0.0, 2.0


def build_classifier(folder: Path) -> Path:
    """A ViTForImageClassification as small as it gets, labelled like Falconsai/nsfw_image_detection."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=16,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def filtering(classifier_dir: Path, scope: str, threshold: float) -> dict[str, Any]:
    """The settings of a content filter over ``scope`` (refs, outputs, both) with the tiny classifier."""
    return {
        "content_filter": scope,
        "content_filter_model": str(classifier_dir),
        "content_filter_threshold": threshold,
    }
