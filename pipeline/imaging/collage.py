"""The DTC conditioning images built from the product: the hint ("crude collage") and the reference."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.imaging.geometry import Box, fit_centered, largest_inscribed_rectangle

_RESAMPLE = Image.Resampling.LANCZOS
_REDUCING_GAP = 2.0  # Pillow's integer pre-reduction before LANCZOS: "indistinguishable" quality, less work


def hint_rectangle(mask: np.ndarray, product_size: tuple[int, int]) -> Box:
    """Where the product goes in the hint: the largest rectangle of the product's aspect ratio inside the
    largest axis-aligned rectangle inside the mask, centred in it."""
    return fit_centered(largest_inscribed_rectangle(mask), product_size[0] / product_size[1])


def make_hint(product: Image.Image, mask: np.ndarray, *, rect: Box | None = None) -> np.ndarray:
    """The hint: a black canvas of the mask's size with the product (RGB) resized into `hint_rectangle`.

    Returns uint8 (H, W, 3). `mask` is the model crop's bool mask (True = fill) and must not be empty.
    `rect` is `hint_rectangle(mask, product.size)` when the caller has it already.
    """
    height, width = mask.shape
    x0, y0, x1, y1 = rect if rect is not None else hint_rectangle(mask, product.size)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(product.resize((x1 - x0, y1 - y0), _RESAMPLE, reducing_gap=_REDUCING_GAP), (x0, y0))
    return np.array(canvas)


def make_reference(product: Image.Image, size: int) -> np.ndarray:
    """The image encoder's input: the product (RGB) padded to a square with white, keeping its aspect ratio,
    at `size` x `size`. Returns uint8 (size, size, 3).

    Resizes first and pads after (same picture as pad-then-resize, up to rounding, with less work).
    """
    x0, y0, x1, y1 = fit_centered((0, 0, size, size), product.width / product.height)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(product.resize((x1 - x0, y1 - y0), _RESAMPLE, reducing_gap=_REDUCING_GAP), (x0, y0))
    return np.array(canvas)
