"""Encoding cost: fluxserve's default PNG, JPEG and WebP settings against Pillow's defaults.

Prints milliseconds per megapixel for each, and the ratio fluxserve / Pillow, at 1 and 4
megapixels, on photo-like content (what real models make) and on noise (what tiny models make).
Goal: the default format (PNG) at most 30 ms per megapixel.

Run: scripts/bench encoding
"""

from __future__ import annotations

import io
import sys

from PIL import Image

from bench.common import interleaved_medians, noise, photo_like
from fluxserve.imaging.encode import ImageFormat, encode_image

SIZES = {"1 MP": (1024, 1024), "4 MP": (2048, 2048)}
PILLOW_DEFAULTS = {ImageFormat.PNG: "PNG", ImageFormat.JPEG: "JPEG", ImageFormat.WEBP: "WEBP"}
GOAL_MS_PER_MP = 30.0


def pillow_default(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def main(rounds: int = 7) -> int:
    print(
        f"{'content':8} {'size':5} {'format':6} {'fluxserve ms/MP':>16} {'Pillow ms/MP':>13} {'ratio':>6} "
        f"{'fluxserve KB':>13} {'Pillow KB':>10}"
    )
    default_png_worst = 0.0
    for content, make in (("photo", photo_like), ("noise", noise)):
        for label, (width, height) in SIZES.items():
            image = make(width, height)
            megapixels = width * height / 1e6
            for fmt, pillow_name in PILLOW_DEFAULTS.items():
                medians = interleaved_medians(
                    {
                        "fluxserve": lambda fmt=fmt, image=image: encode_image(
                            image, fmt, parameters={"prompt": "bench"}
                        ),
                        "pillow": lambda name=pillow_name, image=image: pillow_default(image, name),
                    },
                    rounds,
                )
                ours, theirs = medians["fluxserve"] * 1000 / megapixels, medians["pillow"] * 1000 / megapixels
                ours_kb = len(encode_image(image, fmt)) // 1024
                theirs_kb = len(pillow_default(image, pillow_name)) // 1024
                print(
                    f"{content:8} {label:5} {fmt.value:6} {ours:16.1f} {theirs:13.1f} {ours / theirs:6.2f} "
                    f"{ours_kb:13} {theirs_kb:10}"
                )
                if fmt is ImageFormat.PNG and content == "photo":
                    default_png_worst = max(default_png_worst, ours)
    verdict = "met" if default_png_worst <= GOAL_MS_PER_MP else "NOT met"
    print(
        f"\ndefault format (png) on photo-like content: at most {default_png_worst:.1f} ms/MP; "
        f"goal {GOAL_MS_PER_MP:.0f} ms/MP {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
