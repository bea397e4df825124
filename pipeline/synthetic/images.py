"""Drawn images and their bytes: what the sample set, the procedural pairs, the tests and the benchmarks draw with.

Nothing is downloaded. Drawing primitives (colours, surface textures, a painter that keeps the silhouette, an
ellipse mask), photo-like noise pictures, the one `encode` to bytes, and the awkward bytes a decoder must refuse.
"""

from __future__ import annotations

import colorsys
import io
import random
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

Colour = tuple[int, int, int]
TEXTURES = ("solid", "stripes", "dots", "checker", "gradient")

# (divisor of the height, amplitude) of each layer of smooth noise in a `photo`.
SMOOTH = ((16, 1.0),)  # one coarse layer: close to itself under any decent resampling
# Coarse to fine detail: with grain, a quality-92 JPEG of 4000x3000 is about a phone photo's size. Flat colours
# compress to almost nothing and decode unrealistically fast.
PHONE = ((250, 1.0), (60, 0.5), (12, 0.25))


def random_colour(rng: random.Random) -> Colour:
    """A colour anywhere in hue, from muted to saturated, never near white (the product photo's background)."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 1.0), rng.uniform(0.25, 0.9))
    return round(r * 255), round(g * 255), round(b * 255)


def shade(c: Colour, f: float) -> Colour:
    return tuple(max(0, min(255, round(v * f))) for v in c)  # type: ignore[return-value]


def texture(rng: random.Random, size: tuple[int, int], base: Colour) -> Image.Image:
    """A surface of `size` in `base` and a second colour: solid, stripes, dots, checker or a gradient."""
    kind = rng.choice(TEXTURES)
    img = Image.new("RGB", size, base)
    if kind == "solid":
        return img
    d = ImageDraw.Draw(img)
    w, h = size
    other = shade(base, rng.uniform(0.45, 0.7)) if rng.random() < 0.5 else random_colour(rng)
    step = max(6, round(min(w, h) * rng.uniform(0.08, 0.2)))
    if kind == "stripes":
        vertical = rng.random() < 0.5
        for p in range(0, w if vertical else h, 2 * step):
            d.rectangle([p, 0, p + step - 1, h] if vertical else [0, p, w, p + step - 1], fill=other)
    elif kind == "dots":
        r = max(2, step // 3)
        for y in range(step // 2, h, step):
            for x in range(step // 2, w, step):
                d.ellipse([x - r, y - r, x + r, y + r], fill=other)
    elif kind == "checker":
        for y in range(0, h, step):
            for x in range(0, w, step):
                if (x // step + y // step) % 2:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=other)
    else:  # gradient, top to bottom
        for y in range(h):
            t = y / max(1, h - 1)
            d.line([(0, y), (w, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(base, other, strict=True)))
    return img


class Painter:
    """Draws filled shapes on a photo on white and on its silhouette at once."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.rgb = Image.new("RGB", size, "white")
        self.alpha = Image.new("L", size, 0)

    def shape(self, kind: str, xy: list, fill: Colour | Image.Image) -> None:
        mask = Image.new("L", self.rgb.size, 0)
        getattr(ImageDraw.Draw(mask), kind)(xy, fill=255)
        self.rgb.paste(fill, (0, 0, *self.rgb.size) if isinstance(fill, tuple) else None, mask)
        self.alpha.paste(255, None, mask)


def ellipse_mask(box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    """An L mask of `size`: 255 inside the ellipse inscribed in `box` (Pillow's, its far edges included), else 0."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return mask


def photo(
    width: int, height: int, seed: int = 0, *, scales: Sequence[tuple[int, float]] = SMOOTH, grain: float = 0.0
) -> Image.Image:
    """RGB smooth noise: a layer per (divisor, amplitude) of `scales`, upscaled, plus per-pixel grain (its sigma)."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((height, width, 3), np.float32)
    for div, amp in scales:
        small = rng.normal(0, 1, (max(2, height // div), max(2, width // div), 3)).astype(np.float32)
        img = Image.fromarray(np.uint8(np.clip(128 + 60 * small, 0, 255))).resize((width, height), Image.BICUBIC)
        acc += amp * (np.asarray(img, np.float32) - 128)
    if grain:
        acc += rng.normal(0, grain, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.uint8(np.clip(128 + acc, 0, 255)))


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3): every pixel drawn on its own (no resampling keeps it)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    """`img` saved as `fmt` with Pillow's `options` (quality, exif, ...)."""
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def exif_with_orientation(orientation: int) -> Image.Exif:
    """EXIF that says how to turn the stored pixels upright (tag 0x0112), as a camera writes it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny IDAT: decoding it would need a huge buffer."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
