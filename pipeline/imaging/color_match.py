"""Colour matching: map a generated crop's colours onto its scene's before paste-back.

The VAE round trip shifts a crop's colours a little. Paste-back keeps every pixel outside the dilated region exactly
the scene's, so the shift shows as an edge in the feathered band. A `ColorMap` is fitted where the model was asked to
keep the scene (the crop's context) and applied to all of the crop that is pasted, the product included.

Methods (`COLOR_MATCH_METHODS`; `ImageSettings.color_match` chooses one):
- `none`: no map; paste-back pastes the crop as the model returned it.
- `mean_std`: per CIELAB channel, the context's mean and standard deviation moved onto the scene's; applied as a 3D
  lookup table (Pillow's `Color3DLUT`, trilinear between `LUT_SIZE`^3 points).
- `affine`: per RGB channel, the least-squares line scene = gain * generated + offset; a 256-entry table a channel.
- `poly2`: per RGB channel, the least-squares parabola over the range of context values the fit saw, continued
  beyond it by the `affine` gain; the `affine` line where the parabola's slope leaves the gain range.
Gains are clamped to [1/2, 2]: a flat context (a plain wall) says little about contrast, and the map recolours the
product too, which the context never showed.

The fit reads cell averages rather than pixels (`context_samples`): the crop is cut into about `CELLS` x `CELLS`
cells, and each cell's scene pixels are averaged at the same place, so both sides are compared at the crop's
resolution whatever the scene's, at a cost that does not grow with the scene.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageFilter

from pipeline.imaging.geometry import Box

ColorMatch = Literal["none", "mean_std", "affine", "poly2"]
COLOR_MATCH_METHODS: tuple[str, ...] = get_args(ColorMatch)

CELLS = 64  # cells across the crop's shorter side in the fit
MIN_CELLS = 16  # fewer context cells than this (a region filling its window): no map
LUT_SIZE = 17  # points a side of `mean_std`'s 3D table
_SCENE_TAPS = 4  # nearest scene pixels per cell and axis, averaged
_GAIN_RANGE = (0.5, 2.0)
_FLAT = 1e-6  # a variance or spread below this is a flat context: gain 1


@dataclass(frozen=True, eq=False)
class ColorMap:
    """A fitted map of a generated crop's colours onto its scene's, as a Pillow lookup table: 768 ints for
    `Image.point` (one 256-entry table per RGB channel) or a `Color3DLUT` filter."""

    method: str
    table: list[int] | ImageFilter.Color3DLUT

    def apply(self, image: Image.Image) -> Image.Image:
        """`image` (RGB) with its colours mapped; a new image."""
        if isinstance(self.table, ImageFilter.Color3DLUT):
            return image.filter(self.table)
        return image.point(self.table)


def context_samples(
    scene: Image.Image, generated: np.ndarray, window: Box, *, exclude: Box
) -> tuple[np.ndarray, np.ndarray]:
    """The generated crop's and the scene's colours at the same places of the crop's context, as float (N, 3) in
    0..255 each: averages over the crop's cells (`CELLS` across) that lie inside the scene and do not meet `exclude`.

    `generated` is uint8 (h, w, 3) covering `window` of the upright RGB `scene`; `exclude` is paste-back's box (the
    region's bbox grown by the dilation), so the fit sees the context the scene shows around what is pasted, and
    none of the region's border, where a latent model's output bleeds. A cell's scene colour is the mean of
    `_SCENE_TAPS` x `_SCENE_TAPS` nearest pixels, its generated colour the mean of all its pixels.
    """
    gen_h, gen_w = generated.shape[:2]
    cell = max(1, min(gen_h, gen_w) // CELLS)
    wx0, wy0, wx1, wy1 = window
    step_x, step_y = (wx1 - wx0) / gen_w * cell, (wy1 - wy0) / gen_h * cell  # a cell's size in scene pixels
    c0, c1 = _cells_inside(wx0, step_x, gen_w // cell, scene.width)
    r0, r1 = _cells_inside(wy0, step_y, gen_h // cell, scene.height)
    if c1 <= c0 or r1 <= r0:
        return np.empty((0, 3)), np.empty((0, 3))
    box = (
        max(0.0, wx0 + c0 * step_x), max(0.0, wy0 + r0 * step_y),
        min(float(scene.width), wx0 + c1 * step_x), min(float(scene.height), wy0 + r1 * step_y),
    )
    taps = (_SCENE_TAPS * (c1 - c0), _SCENE_TAPS * (r1 - r0))
    scene_cells = np.asarray(scene.resize(taps, Image.Resampling.NEAREST, box=box).reduce(_SCENE_TAPS))
    crop_box = (c0 * cell, r0 * cell, c1 * cell, r1 * cell)
    gen_cells = np.asarray(Image.fromarray(generated).reduce(cell, box=crop_box))
    ex0, ey0, ex1, ey1 = exclude
    left = wx0 + np.arange(c0, c1) * step_x
    top = wy0 + np.arange(r0, r1) * step_y
    meets_x = (left < ex1) & (left + step_x > ex0)
    meets_y = (top < ey1) & (top + step_y > ey0)
    keep = ~(meets_y[:, None] & meets_x[None, :])
    return gen_cells[keep].astype(np.float64), scene_cells[keep].astype(np.float64)


def _cells_inside(start: float, step: float, count: int, length: int) -> tuple[int, int]:
    """The cells [first, stop) of `count` cells of `step` pixels from `start` that lie inside [0, length]."""
    first = max(0, math.ceil(-start / step - 1e-9))
    stop = min(count, math.floor((length - start) / step + 1e-9))
    return first, stop


def fit_color_map(method: str, generated: np.ndarray, scene: np.ndarray) -> ColorMap | None:
    """The `method` map taking `generated` colours to `scene` colours (float (N, 3) in 0..255, same places, as
    `context_samples` returns), or None: for `none`, and when fewer than `MIN_CELLS` samples leave nothing to fit."""
    if method not in COLOR_MATCH_METHODS:
        raise ValueError(f"unknown colour-match method {method!r}; expected one of {', '.join(COLOR_MATCH_METHODS)}")
    if method == "none" or len(generated) < MIN_CELLS:
        return None
    if method == "mean_std":
        return ColorMap(method, _mean_std_lut(generated, scene))
    gain, offset = _affine(generated, scene)
    levels = np.arange(256, dtype=np.float64)
    curves = gain[:, None] * levels + offset[:, None]
    if method == "poly2":
        curves = np.stack([_poly2_curve(generated[:, c], scene[:, c], curves[c], gain[c]) for c in range(3)])
    return ColorMap(method, np.clip(np.rint(curves), 0, 255).astype(int).ravel().tolist())


def _gain(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Per channel numerator / denominator (a spread of the generated context), clamped; 1 where it is flat."""
    flat = denominator < _FLAT
    return np.where(flat, 1.0, np.clip(numerator / np.where(flat, 1.0, denominator), *_GAIN_RANGE))


def _affine(generated: np.ndarray, scene: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per RGB channel, least squares scene = gain * generated + offset (gain clamped)."""
    mean_g, mean_s = generated.mean(axis=0), scene.mean(axis=0)
    centred = generated - mean_g
    variance = (centred**2).mean(axis=0)
    covariance = (centred * (scene - mean_s)).mean(axis=0)
    gain = _gain(covariance, variance)
    return gain, mean_s - gain * mean_g


def _poly2_curve(x: np.ndarray, y: np.ndarray, line: np.ndarray, gain: float) -> np.ndarray:
    """One channel's `poly2` curve over the levels 0..255; `line` (the affine fit) where the parabola's slope would
    leave the gain range somewhere (never decreasing, never steeper than the clamp allows)."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1.0:
        return line
    levels = np.arange(256, dtype=np.float64)
    inside = np.clip(levels, lo, hi)
    curve = np.polyval(np.polyfit(x, y, 2), inside) + gain * (levels - inside)
    slopes = np.diff(curve)
    low, high = _GAIN_RANGE
    return curve if slopes.min() >= low - 1e-9 and slopes.max() <= high + 1e-9 else line


def _mean_std_lut(generated: np.ndarray, scene: np.ndarray) -> ImageFilter.Color3DLUT:
    """The `mean_std` map as a 3D table: RGB -> CIELAB -> per channel (x - mean) * gain + mean' -> RGB."""
    from skimage.color import lab2rgb, rgb2lab  # loads scipy, which a process that never matches colours skips

    gen_lab, scene_lab = rgb2lab(generated / 255.0), rgb2lab(scene / 255.0)
    gain = _gain(scene_lab.std(axis=0), gen_lab.std(axis=0))
    offset = scene_lab.mean(axis=0) - gain * gen_lab.mean(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lab2rgb warns as it clips colours outside sRGB, as meant
        mapped = lab2rgb(rgb2lab(_lut_grid()) * gain + offset)
    return ImageFilter.Color3DLUT(LUT_SIZE, mapped)


def _lut_grid() -> np.ndarray:
    """The (LUT_SIZE^3, 3) RGB points of a 3D table in Pillow's order (red changing fastest), in 0..1."""
    levels = np.linspace(0.0, 1.0, LUT_SIZE)
    blue, green, red = np.meshgrid(levels, levels, levels, indexing="ij")
    return np.stack([red, green, blue], axis=-1).reshape(-1, 3)
