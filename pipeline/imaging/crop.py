"""Resample a window of an image, possibly reaching beyond its borders, to a fixed size."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def crop_resized(
    img: Image.Image,
    box: tuple[float, float, float, float],
    size: tuple[int, int],
    *,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> Image.Image:
    """Resample the float `box` (x0, y0, x1, y1) of `img` to `size`, without rounding the box to pixels.

    Where the box reaches beyond the image, the image is extended by repeating its edge pixels (padding the
    model sees as plausible colour rather than a black frame; it is never pasted back). Large boxes are first
    shrunk with `Image.reduce` (box filter, integer factor, leaving at least 2x for the final resampling, as
    Pillow's `reducing_gap=2` does) so that the padding, when needed, is applied to a small array.
    """
    x0, y0, x1, y1 = box
    width, height = img.size
    # Integer pixels of the image that the box touches.
    cx0, cy0 = max(math.floor(x0), 0), max(math.floor(y0), 0)
    cx1, cy1 = min(math.ceil(x1), width), min(math.ceil(y1), height)
    if cx0 >= cx1 or cy0 >= cy1:
        raise ValueError(f"box {box} does not overlap the {width}x{height} image")
    factor = max(1, int(min((x1 - x0) / size[0], (y1 - y0) / size[1]) // 2))
    if factor > 1:
        # Whole reduce blocks where the image allows, so only blocks at the image's own edge are partial.
        cx1 = min(width, cx0 + math.ceil((cx1 - cx0) / factor) * factor)
        cy1 = min(height, cy0 + math.ceil((cy1 - cy0) / factor) * factor)
        part = img.reduce(factor, box=(cx0, cy0, cx1, cy1))
    else:
        part = img.crop((cx0, cy0, cx1, cy1))
    # Part pixel i covers image pixels [c0 + i * factor, c0 + (i + 1) * factor).
    pad_left = math.ceil((cx0 - x0) / factor) if x0 < cx0 else 0
    pad_top = math.ceil((cy0 - y0) / factor) if y0 < cy0 else 0
    pad_right = max(0, math.ceil((x1 - cx0) / factor) - part.width)
    pad_bottom = max(0, math.ceil((y1 - cy0) / factor) - part.height)
    if pad_left or pad_top or pad_right or pad_bottom:
        array = np.asarray(part)
        widths = ((pad_top, pad_bottom), (pad_left, pad_right)) + ((0, 0),) * (array.ndim - 2)
        part = Image.fromarray(np.pad(array, widths, mode="edge"))
    ox, oy = cx0 - pad_left * factor, cy0 - pad_top * factor
    source = (
        max(0.0, (x0 - ox) / factor),
        max(0.0, (y0 - oy) / factor),
        min(float(part.width), (x1 - ox) / factor),
        min(float(part.height), (y1 - oy) / factor),
    )
    return part.resize(size, resample, box=source)
