"""How a paste-back meets its scene: colour differences at the seam and in the region, and a check of the outside.

Colour differences are CIEDE2000 (ΔE00) in CIELAB (sRGB, D65), scikit-image's `rgb2lab` and `deltaE_ciede2000`,
at the output's resolution, inside paste-back's box, between small blocks' mean colours (`seam_metrics`). To bound
the cost whatever the region's size, the blocks are read on a lattice of at most `LATTICE_PX` points (Pillow's
nearest sampling), and the band's or the region's points on it are thinned evenly to at most `MAX_SAMPLES`. The
outside count is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops

LATTICE_PX = 256 * 256
MAX_SAMPLES = 1024
# Largest averaging block: Pillow's 8-bit mean of a 0 / 255 block is 0 or 255 only when all its pixels are, while
# blocks hold fewer than 510 pixels.
MAX_BLOCK = 8
_NONZERO_LUT = [0] + [255] * 255


@dataclass(frozen=True)
class SeamMetrics:
    """One pair's paste-back against its scene.

    seam_delta_e: mean ΔE00 between what was pasted (the generated crop resampled to the scene, after colour
      matching) and the scene, on the band paste-back takes from the crop outside the region (alpha > 0 outside the
      region: the dilation and its feather), both averaged over blocks of about one crop pixel. About 1 is the
      smallest difference people see between patches side by side; NaN when there is no band (the region fills
      paste-back's box, as a whole-image mask does).
    region_delta_e: the same inside the region: near 0 means the model returned the scene and inserted nothing.
      NaN when nothing was pasted.
    outside_changed_px: pixels of paste-back's box where alpha is 0 (the region's outside, dilated) that differ from
      the scene after paste-back; no pixel outside the box is ever written. Anything but 0 is a bug.
    """

    seam_delta_e: float
    region_delta_e: float
    outside_changed_px: int

    @classmethod
    def nothing_pasted(cls) -> SeamMetrics:
        return cls(math.nan, math.nan, 0)


def delta_e_2000(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIEDE2000 between uint8 sRGB colours `a` and `b` (..., 3), pixel by pixel."""
    from skimage.color import deltaE_ciede2000, rgb2lab  # loads scipy, which a process that never measures skips

    return deltaE_ciede2000(rgb2lab(a), rgb2lab(b))


def seam_metrics(
    before: Image.Image,
    after: Image.Image,
    pasted: Image.Image,
    alpha: Image.Image,
    region: Image.Image,
    *,
    block: int = 1,
) -> SeamMetrics:
    """The metrics of one paste-back, from images of its box: the scene `before` and `after` it (RGB), what was
    `pasted` (RGB), its `alpha` ("L") and the region ("L", 0 / 255; `Region.crop_image` of the box).

    Colours are compared as means over `block` x `block` pixels (at most `MAX_BLOCK`): paste-back passes about one
    pixel of the generated crop, since finer detail of the scene cannot come back from the crop and would swamp the
    colour difference. A block counts for the band when all its pixels are in the band, for the region when all
    are in the region.
    """
    block = min(max(1, block), MAX_BLOCK)
    covered = alpha.point(_NONZERO_LUT)
    images = [before, pasted, covered, region]
    if block > 1:
        images = [image.reduce(block) for image in images]
    width, height = images[0].size
    step = max(1, math.ceil(math.sqrt(width * height / LATTICE_PX)))
    if step > 1:
        size = (max(1, width // step), max(1, height // step))
        images = [image.resize(size, Image.Resampling.NEAREST) for image in images]
    scene, generated, all_covered, in_region = (np.asarray(image) for image in images)
    return SeamMetrics(
        seam_delta_e=_mean_delta_e(generated, scene, (all_covered == 255) & (in_region == 0)),
        region_delta_e=_mean_delta_e(generated, scene, in_region == 255),
        outside_changed_px=outside_changed(before, after, alpha, covered=covered),
    )


def _mean_delta_e(generated: np.ndarray, scene: np.ndarray, where: np.ndarray) -> float:
    """Mean ΔE00 over at most `MAX_SAMPLES` of the `where` pixels, evenly spaced in raster order; NaN for none."""
    picked = np.flatnonzero(where)
    if picked.size == 0:
        return math.nan
    picked = picked[:: math.ceil(picked.size / MAX_SAMPLES)]
    flat_g, flat_s = generated.reshape(-1, 3)[picked], scene.reshape(-1, 3)[picked]
    return float(delta_e_2000(flat_g, flat_s).mean())


def outside_changed(
    before: Image.Image, after: Image.Image, alpha: Image.Image, *, covered: Image.Image | None = None
) -> int:
    """How many pixels where `alpha` is 0 differ between `before` and `after` (images of one box). `covered`, when
    given, is `alpha` with every non-zero value at 255."""
    difference = ImageChops.difference(after, before)
    outside = ImageChops.invert(covered if covered is not None else alpha.point(_NONZERO_LUT))
    histogram = difference.histogram(outside)  # 256 bins a channel; bin 0 counts unchanged values
    if not any(histogram[1:256]) and not any(histogram[257:512]) and not any(histogram[513:768]):
        return 0
    changed = np.asarray(difference).any(axis=2) & (np.asarray(alpha) == 0)
    return int(np.count_nonzero(changed))
