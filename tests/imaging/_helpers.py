"""Reference implementations for the imaging tests; their images are drawn by `pipeline.synthetic.images`."""

from __future__ import annotations

import numpy as np


def brute_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (Chebyshev) dilation by shifting, clipped at the borders."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out
