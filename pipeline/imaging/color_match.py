"""Colour matching: map a generated crop's colours onto its scene's before paste-back.

The VAE round trip shifts a crop's colours a little. Paste-back keeps every pixel outside the dilated region exactly
the scene's, so the shift shows as an edge in the feathered band. Each method is fitted where the model was asked to
keep the scene (the crop's context) and changes all of the crop that is pasted, the product included.

Methods (`COLOR_MATCH_METHODS`; `ImageSettings.color_match` chooses one):
- `none`: the crop is pasted as the model returned it.
- `mean_std`: per CIELAB channel, the context's mean and standard deviation moved onto the scene's; applied as a 3D
  lookup table (Pillow's `Color3DLUT`, trilinear between `LUT_SIZE`^3 points).
- `affine`: per RGB channel, the least-squares line scene = gain * generated + offset; a 256-entry table a channel.
- `poly2`: per RGB channel, the least-squares parabola over the range of context values the fit saw, continued
  beyond it by the `affine` gain; the `affine` line where the parabola's slope leaves the gain range.
- `poisson`: Poisson blending on the cell grid: the crop keeps its own gradients and gets, added, the membrane (the
  harmonic interpolation) of the scene-minus-crop difference around the dilated region. A local correction, where the
  others are one map for the whole crop.
Gains are clamped to [1/2, 2]: a flat context (a plain wall) says little about contrast, and a map recolours the
product too, which the context never showed.

Every method reads cell averages rather than pixels (`CellGrid`): the crop is cut into about `CELLS` x `CELLS`
cells, and each cell's scene pixels are averaged at the same place, so both sides are compared at the crop's
resolution whatever the scene's, at a cost that does not grow with the scene.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageChops, ImageFilter

from pipeline.imaging.geometry import Box

ColorMatch = Literal["none", "mean_std", "affine", "poly2", "poisson"]
COLOR_MATCH_METHODS: tuple[str, ...] = get_args(ColorMatch)

CELLS = 64  # cells across the crop's shorter side
MIN_CELLS = 16  # fewer context cells than this (a region filling its window): no matching
LUT_SIZE = 17  # points a side of `mean_std`'s 3D table
_SCENE_TAPS = 4  # nearest scene pixels per cell and axis, averaged
_GAIN_RANGE = (0.5, 2.0)
_FLAT = 1e-6  # a variance or spread below this is a flat context: gain 1
# Added to the membrane's diagonal: a part of the region with no context cell beside it (walled in by the image's
# borders) gets no correction instead of an unsolvable system; elsewhere it changes the solution by far less than a
# level.
_MEMBRANE_ANCHOR = 1e-4


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


@dataclass(frozen=True, eq=False)
class CellGrid:
    """The crop's cells that lie inside the scene, with the mean colours of the generated crop and of the scene in
    each (float (rows, cols, 3), 0..255). Cell (i, j) is crop pixels [(first_col + j) * cell, ... + cell) across and
    likewise down, and scene pixels from `left[j]` and `top[i]`, `step` pixels a side."""

    cell: int
    first_col: int
    first_row: int
    left: np.ndarray
    top: np.ndarray
    step: tuple[float, float]
    generated: np.ndarray
    scene: np.ndarray

    @classmethod
    def measure(cls, scene: Image.Image, generated: np.ndarray, window: Box, *, cells: int = CELLS) -> CellGrid | None:
        """The grid of about `cells` cells across `generated` (uint8 (h, w, 3), covering `window` of the upright RGB
        `scene`); None when no cell lies inside the scene. A cell's scene colour is the mean of `_SCENE_TAPS` x
        `_SCENE_TAPS` nearest pixels, its generated colour the mean of all its pixels."""
        gen_h, gen_w = generated.shape[:2]
        cell = max(1, min(gen_h, gen_w) // cells)
        wx0, wy0, wx1, wy1 = window
        step_x, step_y = (wx1 - wx0) / gen_w * cell, (wy1 - wy0) / gen_h * cell
        c0, c1 = _cells_inside(wx0, step_x, gen_w // cell, scene.width)
        r0, r1 = _cells_inside(wy0, step_y, gen_h // cell, scene.height)
        if c1 <= c0 or r1 <= r0:
            return None
        box = (
            max(0.0, wx0 + c0 * step_x), max(0.0, wy0 + r0 * step_y),
            min(float(scene.width), wx0 + c1 * step_x), min(float(scene.height), wy0 + r1 * step_y),
        )
        taps = (_SCENE_TAPS * (c1 - c0), _SCENE_TAPS * (r1 - r0))
        scene_cells = np.asarray(scene.resize(taps, Image.Resampling.NEAREST, box=box).reduce(_SCENE_TAPS))
        crop_box = (c0 * cell, r0 * cell, c1 * cell, r1 * cell)
        gen_cells = np.asarray(Image.fromarray(generated).reduce(cell, box=crop_box))
        return cls(
            cell=cell, first_col=c0, first_row=r0,
            left=wx0 + np.arange(c0, c1) * step_x, top=wy0 + np.arange(r0, r1) * step_y, step=(step_x, step_y),
            generated=gen_cells.astype(np.float64), scene=scene_cells.astype(np.float64),
        )

    def meeting(self, box: Box) -> np.ndarray:
        """bool (rows, cols): the cells that meet the scene `box`."""
        x0, y0, x1, y1 = box
        meets_x = (self.left < x1) & (self.left + self.step[0] > x0)
        meets_y = (self.top < y1) & (self.top + self.step[1] > y0)
        return meets_y[:, None] & meets_x[None, :]

    def covering(self, covered: Image.Image, origin: tuple[int, int]) -> np.ndarray:
        """bool (rows, cols): the cells that hold the centre of a non-zero pixel of the "L" image `covered` placed at
        scene `origin` (zero beyond it), such as paste-back's alpha."""
        out = np.zeros(self.generated.shape[:2], dtype=bool)
        meets = self.meeting((*origin, origin[0] + covered.width, origin[1] + covered.height))
        rows, cols = np.flatnonzero(meets.any(axis=1)), np.flatnonzero(meets.any(axis=0))
        if rows.size == 0:
            return out
        x0, y0 = self.left[cols[0]] - origin[0], self.top[rows[0]] - origin[1]
        x1, y1 = x0 + cols.size * self.step[0], y0 + rows.size * self.step[1]
        # Crop pads with 0 beyond the image; BOX averages each cell's footprint, in floats so that one non-zero pixel
        # in a large cell still counts.
        ix0, iy0 = math.floor(x0), math.floor(y0)
        part = covered.crop((ix0, iy0, math.ceil(x1), math.ceil(y1))).convert("F")
        cells = part.resize((cols.size, rows.size), Image.Resampling.BOX, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
        out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = np.asarray(cells) > 0
        return out


def _cells_inside(start: float, step: float, count: int, length: int) -> tuple[int, int]:
    """The cells [first, stop) of `count` cells of `step` pixels from `start` that lie inside [0, length]."""
    first = max(0, math.ceil(-start / step - 1e-9))
    stop = min(count, math.floor((length - start) / step + 1e-9))
    return first, stop


def context_samples(
    scene: Image.Image, generated: np.ndarray, window: Box, *, exclude: Box
) -> tuple[np.ndarray, np.ndarray]:
    """The generated crop's and the scene's colours at the same places of the crop's context, as float (N, 3) in
    0..255 each: the `CellGrid` cells that do not meet `exclude`.

    `exclude` is paste-back's box (the region's bbox grown by the dilation), so a map is fitted on the context the
    scene shows around what is pasted, and on none of the region's border, where a latent model's output bleeds.
    """
    grid = CellGrid.measure(scene, generated, window)
    if grid is None:
        return np.empty((0, 3)), np.empty((0, 3))
    keep = ~grid.meeting(exclude)
    return grid.generated[keep], grid.scene[keep]


def match_colors(
    method: str,
    scene: Image.Image,
    generated: np.ndarray,
    window: Box,
    *,
    paste: Box,
    alpha: Image.Image,
    part: Box,
) -> Image.Image | None:
    """The `part` (x0, y0, x1, y1, in crop pixels) of `generated` with its colours matched to `scene` by `method`, as
    an RGB image of the part's size; None for `none` and when there is too little context to fit.

    `generated` is uint8 (h, w, 3) covering `window` of the upright RGB `scene`; `paste` is paste-back's box and
    `alpha` ("L", the paste box's size) its alpha.
    """
    if method not in COLOR_MATCH_METHODS:
        raise ValueError(f"unknown colour-match method {method!r}; expected one of {', '.join(COLOR_MATCH_METHODS)}")
    if method == "none":
        return None
    grid = CellGrid.measure(scene, generated, window)
    if grid is None:
        return None
    if method == "poisson":
        unknown = grid.covering(alpha, paste[:2])
        if np.count_nonzero(~unknown) < MIN_CELLS or not unknown.any():
            return None
        return _add_field(generated, part, grid, _membrane(grid.scene - grid.generated, unknown))
    keep = ~grid.meeting(paste)
    color_map = fit_color_map(method, grid.generated[keep], grid.scene[keep])
    return None if color_map is None else color_map.apply(Image.fromarray(generated).crop(part))


def fit_color_map(method: str, generated: np.ndarray, scene: np.ndarray) -> ColorMap | None:
    """The `method` map taking `generated` colours to `scene` colours (float (N, 3) in 0..255, same places, as
    `context_samples` returns), or None: for `none`, and when fewer than `MIN_CELLS` samples leave nothing to fit."""
    if method not in COLOR_MATCH_METHODS or method == "poisson":
        maps = ", ".join(m for m in COLOR_MATCH_METHODS if m != "poisson")
        raise ValueError(f"unknown colour map {method!r}; expected one of {maps}")
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


def _membrane(difference: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """`difference` (rows, cols, 3) with its `unknown` cells replaced by the harmonic interpolation of the others:
    the solution of Laplace's equation there (5-point, the known cells as the boundary, no flow across the grid's
    edge), which is what Poisson blending adds to a pasted image whose own gradients it keeps."""
    from scipy.linalg import solveh_banded  # loaded with scikit-image anyway

    rows, cols = unknown.shape
    index = np.full(unknown.shape, -1)
    index[unknown] = np.arange(np.count_nonzero(unknown))  # raster order: a neighbour is at most a row away
    ys, xs = np.nonzero(unknown)
    degree = np.full(ys.size, _MEMBRANE_ANCHOR)
    rhs = np.zeros((ys.size, 3))
    lower_i, upper_j = [], []  # the Laplacian's -1 entries above the diagonal (symmetric)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ny, nx = ys + dy, xs + dx
        inside = np.flatnonzero((ny >= 0) & (ny < rows) & (nx >= 0) & (nx < cols))
        degree[inside] += 1
        neighbour = index[ny[inside], nx[inside]]
        solved = neighbour >= 0
        if dy + dx > 0:
            lower_i.append(inside[solved])
            upper_j.append(neighbour[solved])
        known = inside[~solved]
        rhs[known] += difference[ny[known], nx[known]]
    i, j = np.concatenate(lower_i), np.concatenate(upper_j)
    bandwidth = int((j - i).max(initial=0))
    banded = np.zeros((bandwidth + 1, ys.size))  # LAPACK's upper form: banded[bandwidth + i - j, j] = A[i, j]
    banded[bandwidth] = degree
    banded[bandwidth + i - j, j] = -1.0
    out = difference.copy()
    out[unknown] = solveh_banded(banded, rhs, check_finite=False)
    return out


def _add_field(generated: np.ndarray, part: Box, grid: CellGrid, field: np.ndarray) -> Image.Image:
    """The `part` of `generated` plus `field` (per cell, at the cells' centres), interpolated bilinearly between
    cells and held constant beyond the grid; the field is rounded to whole levels and clamped to +-127 first."""
    x0, y0, x1, y1 = part
    rows_total, cols_total = -(-generated.shape[0] // grid.cell), -(-generated.shape[1] // grid.cell)
    rows, cols = field.shape[:2]
    widths = ((grid.first_row, rows_total - grid.first_row - rows),
              (grid.first_col, cols_total - grid.first_col - cols), (0, 0))
    whole = np.pad(np.clip(np.rint(field) + 128, 0, 255).astype(np.uint8), widths, mode="edge")
    box = (x0 / grid.cell, y0 / grid.cell, x1 / grid.cell, y1 / grid.cell)  # the part in cells of the whole grid
    added = Image.fromarray(whole).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=box)
    return ImageChops.add(Image.fromarray(generated).crop(part), added, scale=1.0, offset=-128)
