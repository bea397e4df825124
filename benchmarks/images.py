"""Photo-like test inputs, drawn here (nothing downloaded): scenes and products whose JPEGs have a realistic size.

Flat colours compress to almost nothing and decode unrealistically fast, so the benchmark's images are smooth noise at
three scales plus fine grain: a 4000x3000 scene is about 2.8 MB as a quality-92 JPEG, like a phone photo.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw


def photo_like(width: int, height: int, seed: int = 0, grain: float = 4.0) -> Image.Image:
    """Smooth noise at three scales (1/250, 1/60 and 1/12 of the height) and per-pixel grain, as RGB."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((height, width, 3), np.float32)
    for div, amp in ((250, 1.0), (60, 0.5), (12, 0.25)):
        small = rng.normal(0, 1, (max(2, height // div), max(2, width // div), 3)).astype(np.float32)
        img = Image.fromarray(np.uint8(np.clip(128 + 60 * small, 0, 255))).resize((width, height), Image.BICUBIC)
        acc += amp * (np.asarray(img, np.float32) - 128)
    if grain:
        acc += rng.normal(0, grain, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.uint8(np.clip(128 + acc, 0, 255)))


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


@dataclass(frozen=True)
class PairInputs:
    """One pair's input bytes as the CPU stages receive them (after the fetch), and what they are."""

    scene: bytes
    product: bytes
    mask: bytes  # an 8-bit grey PNG of the scene's size (0 / 255), the mask_uri form of the region
    box: tuple[int, int, int, int]  # the mask's bounding box, the box form of the same region
    scene_size: tuple[int, int]
    product_size: tuple[int, int]


def pair_inputs(
    scene_size: tuple[int, int] = (4000, 3000), product_size: tuple[int, int] = (1000, 1000), seed: int = 0
) -> PairInputs:
    """A photo-like JPEG scene (quality 92), a photo-like JPEG product (quality 92) and a region on the scene: an
    ellipse about 22% x 40% of the scene's size in its lower middle, as a PNG mask and as its bounding box."""
    width, height = scene_size
    scene = photo_like(width, height, seed)
    product = photo_like(*product_size, seed=seed + 1)
    box = (int(width * 0.375), int(height * 0.5), int(width * 0.6), int(height * 0.9))
    mask = Image.new("L", scene_size, 0)
    ImageDraw.Draw(mask).ellipse((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return PairInputs(
        scene=encode(scene, "JPEG", quality=92),
        product=encode(product, "JPEG", quality=92),
        mask=encode(mask, "PNG"),
        box=mask.getbbox() or box,
        scene_size=scene_size,
        product_size=product_size,
    )
