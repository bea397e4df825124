"""The region to fill: boxes, masks, their crops, dilation and feathering.

Choices (the contract leaves them to us):
- A box is (x0, y0, x1, y1), integer pixel coordinates on the upright scene, half-open like Pillow's
  (pixels x0 <= x < x1). Integral floats (10.0, as Parquet gives for int columns with nulls) are accepted;
  other floats, NaN, strings and bools are `invalid_box`, as are inverted or zero-area boxes. A box partly
  outside the image is clipped to it; one entirely outside is `mask_out_of_bounds`.
- An all-black mask is `mask_empty`. An all-white mask is valid: the whole image is regenerated and the
  context window is the whole image (padded to a square).
- A box region is kept as coordinates: no scene-sized array is built for it. A mask region keeps the decoded
  grey image; only the crops that are used get thresholded.
- The model's mask crop marks every output pixel that any region pixel touches (the fill region covers the
  region); paste-back uses the region at full resolution, dilated and feathered.
- `Region.pack` / `Region.unpack` carry a region from the preprocess stage to the postprocess stage as a few bytes
  (the thresholded mask inside its bbox, one bit a pixel), so a mask image is decoded once per pair, not twice.
"""

from __future__ import annotations

import functools
import math
import numbers
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from pipeline.core.errors import INVALID_BOX, MASK_EMPTY, MASK_OUT_OF_BOUNDS, PairError
from pipeline.imaging.decode import decode_mask_image
from pipeline.imaging.geometry import Box, intersect

_THRESHOLD_LUT = [0] + [255] * 255  # any non-zero value -> 255
_REGION_LUT = [0] * 128 + [255] * 128  # grey >= 128 is the region
_MAX_BLUR_DILATION = 254  # largest radius at which a lone 255 survives BoxBlur's rounding
_PACK_MAGIC = b"RGN1"
_PACK_HEADER = struct.Struct("<4s7i")  # magic, has_mask, width, height, bbox x0, y0, x1, y1
# Last byte of every packed region: never 0, so the bytes survive containers that strip trailing NULs (numpy's
# fixed-width "S" arrays do, and a batch of rows can become one).
_PACK_END = b"."
# `resized_crop` reduces in NumPy while every output pixel's BOX footprint spans at most this many pixels per axis:
# then Pillow's 8-bit BOX average of 0/255 pixels is non-zero exactly when one of them is 255 (one 255 among 16 x 16
# rounds to 16 after the first pass and to 1 after the second; the bound for that is 16 * 16 <= 510).
_MAX_FOOTPRINT = 16


def validate_box(box: object, size: tuple[int, int]) -> Box:
    """Check a box against the image size (W, H) and clip it to the image; see the module notes."""
    if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4:
        raise PairError(INVALID_BOX, f"a box must be 4 numbers (x0, y0, x1, y1), got {box!r}")
    coords = []
    for name, value in zip(("x0", "y0", "x1", "y1"), box, strict=True):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise PairError(INVALID_BOX, f"box {name} must be an integer pixel coordinate, got {value!r}")
        if isinstance(value, numbers.Integral):
            coords.append(int(value))
            continue
        value = float(value)
        if not math.isfinite(value):
            raise PairError(INVALID_BOX, f"box {name} is {value}; the box has a missing or infinite coordinate")
        if not value.is_integer():
            raise PairError(INVALID_BOX, f"box {name} = {value} is not an integer pixel coordinate")
        coords.append(int(value))
    x0, y0, x1, y1 = coords
    if x1 <= x0 or y1 <= y0:
        raise PairError(
            INVALID_BOX,
            f"box {tuple(coords)} is inverted or has zero area; it needs x0 < x1 and y0 < y1 (x1, y1 exclusive)",
        )
    width, height = size
    clipped = intersect((x0, y0, x1, y1), (0, 0, width, height))
    if clipped is None:
        raise PairError(
            MASK_OUT_OF_BOUNDS, f"box {tuple(coords)} lies entirely outside the {width}x{height} scene (upright)"
        )
    return clipped


def mask_from_box(box: object, size: tuple[int, int]) -> np.ndarray:
    """A bool mask (H, W) of `size` (W, H), True inside the (validated, clipped) box."""
    x0, y0, x1, y1 = validate_box(box, size)
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def as_mask_image(mask: np.ndarray | Image.Image) -> Image.Image:
    """A bool array (H, W) as an "L" image (0 and 255); an image is converted to "L" (grey, region >= 128)."""
    if isinstance(mask, Image.Image):
        return mask if mask.mode == "L" else mask.convert("L")
    return Image.fromarray(np.asarray(mask, dtype=bool).view(np.uint8) * 255)


@dataclass(frozen=True, eq=False)
class Region:
    """The pixels to fill on the upright scene of `size` (W, H).

    `mask` is the full-size mask as an "L" image, the region being grey >= 128 (Pillow crops it and only the
    crops are thresholded), or None for a box region (then the region is exactly `bbox`).
    """

    size: tuple[int, int]
    bbox: Box
    mask: Image.Image | None = None
    # Scene coordinates of `mask`'s top-left pixel: (0, 0) for a full-size mask; the bbox's corner after `unpack`,
    # whose mask covers the bbox only (the region lies inside it, so nothing is lost).
    origin: tuple[int, int] = (0, 0)

    @classmethod
    def from_box(cls, box: object, size: tuple[int, int]) -> Region:
        return cls(size=(int(size[0]), int(size[1])), bbox=validate_box(box, size))

    @classmethod
    def from_mask(cls, mask: np.ndarray | Image.Image) -> Region:
        """From a bool array or a grey image (see `decode.decode_mask_image`); `mask_empty` when no pixel is in
        the region."""
        image = as_mask_image(mask)
        coarse = image.getbbox()  # non-zero pixels; the region (>= 128) lies inside
        bbox = None if coarse is None else image.crop(coarse).point(_REGION_LUT).getbbox()
        if bbox is None:
            raise PairError(MASK_EMPTY, "the mask has no pixel >= 128: nothing to fill (is it all black?)")
        x0, y0 = coarse[:2]
        return cls(size=image.size, bbox=(x0 + bbox[0], y0 + bbox[1], x0 + bbox[2], y0 + bbox[3]), mask=image)

    def crop_image(self, box: Box) -> Image.Image:
        """The region inside `box` as an "L" 0/255 image of the box's size; 0 outside the image."""
        x0, y0, x1, y1 = box
        if self.mask is not None:
            ox, oy = self.origin
            # Crop pads with 0 beyond the mask: beyond the image, and beyond the bbox for an unpacked region.
            return self.mask.crop((x0 - ox, y0 - oy, x1 - ox, y1 - oy)).point(_REGION_LUT)
        out = Image.new("L", (x1 - x0, y1 - y0), 0)
        inside = intersect(box, self.bbox)
        if inside is not None:
            out.paste(255, (inside[0] - x0, inside[1] - y0, inside[2] - x0, inside[3] - y0))
        return out

    def pack(self) -> bytes:
        """The region as bytes for `unpack`: size and bbox, and for a mask region its pixels inside the bbox
        thresholded to one bit each (`np.packbits`)."""
        header = _PACK_HEADER.pack(_PACK_MAGIC, self.mask is not None, *self.size, *self.bbox)
        if self.mask is None:
            return header + _PACK_END
        return header + np.packbits(self.crop(self.bbox)).tobytes() + _PACK_END

    @classmethod
    def unpack(cls, data: bytes) -> Region:
        """The region `pack` wrote: equal to the packed one for every method (`crop`, `crop_image`, `bbox`, ...)."""
        data = bytes(data)
        if len(data) <= _PACK_HEADER.size or not data.endswith(_PACK_END):
            raise ValueError(f"not a packed region ({len(data)} bytes, truncated or foreign)")
        magic, has_mask, width, height, *bbox = _PACK_HEADER.unpack_from(data)
        x0, y0, x1, y1 = bbox
        shape = (y1 - y0, x1 - x0)
        expected = _PACK_HEADER.size + (-(-shape[0] * shape[1] // 8) if has_mask else 0) + len(_PACK_END)
        if magic != _PACK_MAGIC or len(data) != expected or min(shape) <= 0:
            raise ValueError(f"not a packed region (bad header or {len(data)} bytes where {expected} were expected)")
        if not has_mask:
            return cls(size=(width, height), bbox=(x0, y0, x1, y1))
        bits = np.frombuffer(data, np.uint8, offset=_PACK_HEADER.size, count=expected - _PACK_HEADER.size - 1)
        pixels = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape)
        mask = Image.fromarray(pixels * np.uint8(255))
        return cls(size=(width, height), bbox=(x0, y0, x1, y1), mask=mask, origin=(x0, y0))

    def crop(self, box: Box) -> np.ndarray:
        """The region inside `box` as bool (y1 - y0, x1 - x0); False outside the image."""
        if self.mask is not None:  # `crop_image` > 0, thresholded by NumPy instead of a LUT image
            x0, y0, x1, y1 = box
            ox, oy = self.origin
            return np.asarray(self.mask.crop((x0 - ox, y0 - oy, x1 - ox, y1 - oy))) >= 128
        return np.asarray(self.crop_image(box)) > 0

    def resized_crop(self, window: Box, size: int) -> np.ndarray:
        """The region inside the square `window`, resampled to bool (size, size): an output pixel is True when
        any part of its footprint is in the region (so the model's fill region covers the whole region)."""
        wx0, wy0, wx1, wy1 = window
        side_x, side_y = wx1 - wx0, wy1 - wy0
        if self.mask is None:
            # Exact footprint overlap in integers: output pixel i covers [i, i + 1) * side / size.
            bx0, by0, bx1, by1 = self.bbox
            lo_x, hi_x = ((bx0 - wx0) * size) // side_x, -((-(bx1 - wx0) * size) // side_x)
            lo_y, hi_y = ((by0 - wy0) * size) // side_y, -((-(by1 - wy0) * size) // side_y)
            out = np.zeros((size, size), dtype=bool)
            out[max(lo_y, 0) : min(hi_y, size), max(lo_x, 0) : min(hi_x, size)] = True
            return out
        cells_x, cells_y = _box_cells(side_x, size), _box_cells(side_y, size)
        if cells_x is not None and cells_y is not None:
            return self._resized_crop_cells(window, size, cells_x, cells_y)
        return self._resized_crop_pillow(window, size)

    def _resized_crop_pillow(self, window: Box, size: int) -> np.ndarray:
        """`resized_crop` of a mask region by Pillow's BOX resampling of the whole window."""
        # BOX averages each output pixel's footprint (the input pixels whose centres it holds): non-zero when
        # any of them is in the region, except that 8 bits round a coverage below 1/510 to 0. Only if that
        # empties the crop (a sparse mask in a very large window), redo it in 32-bit float, exactly but with 4x
        # the memory.
        crop = self.crop_image(window)
        resized = np.asarray(crop.resize((size, size), Image.Resampling.BOX)) > 0
        if not resized.any():
            resized = np.asarray(crop.convert("F").resize((size, size), Image.Resampling.BOX)) > 0
        return resized

    def _resized_crop_cells(
        self, window: Box, size: int, cells_x: tuple[np.ndarray, np.ndarray], cells_y: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """`_resized_crop_pillow`'s result, computed on the region's bbox only: each output pixel is the OR of the
        thresholded pixels in its BOX footprint (`_box_cells`), which is what Pillow's 8-bit average gives while
        footprints span at most `_MAX_FOOTPRINT` pixels a side. Outside the bbox everything is False."""
        wx0, wy0, wx1, wy1 = window
        out = np.zeros((size, size), dtype=bool)
        inside = intersect(self.bbox, window)
        if inside is None:
            return out
        c0, r0, c1, r1 = inside[0] - wx0, inside[1] - wy0, inside[2] - wx0, inside[3] - wy0
        i0, i1, starts_y, lengths_y = _cells_over(cells_y, r0, r1)
        j0, j1, starts_x, lengths_x = _cells_over(cells_x, c0, c1)
        if i0 >= i1 or j0 >= j1:  # the bbox lies between footprints (a rounding gap, upscaling a 1-pixel region)
            return out
        part = _or_runs(self.crop(inside), starts_y, lengths_y, axis=0)
        out[i0:i1, j0:j1] = _or_runs(part, starts_x, lengths_x, axis=1)
        return out


@functools.lru_cache(maxsize=64)
def _box_cells(side: int, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The footprints of Pillow's BOX resampling of `side` pixels to `size`, as (starts, ends): output pixel i
    averages input pixels [starts[i], ends[i]). None unless every footprint is a run of 1 to `_MAX_FOOTPRINT`
    consecutive pixels (then starts and ends never decrease).

    Mirrors `precompute_coeffs` in Pillow's Resample.c for a resize without a box, in the same double arithmetic:
    the box filter takes the pixels x with (x + 0.5 - centre) / max(scale, 1) in (-0.5, 0.5]. Downscaling, the
    footprints partition the input (up to rounding at exact ties); upscaling, each is one pixel.
    """
    scale = side / size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    ksize = math.ceil(support) * 2 + 1
    center = (np.arange(size) + 0.5) * scale
    first = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C's (int) truncates; the values are >= 0
    stop = np.minimum((center + support + 0.5).astype(np.int64), side)
    pixels = first[:, None] + np.arange(ksize)
    t = (pixels - center[:, None] + 0.5) * (1.0 / filterscale)
    taken = (pixels < stop[:, None]) & (t > -0.5) & (t <= 0.5)
    counts = taken.sum(axis=1)
    if counts.min() < 1 or counts.max() > _MAX_FOOTPRINT:
        return None
    starts = first + taken.argmax(axis=1)
    ends = starts + counts
    runs = (pixels >= starts[:, None]) & (pixels < ends[:, None])
    if not np.array_equal(taken, runs) or (np.diff(starts) < 0).any() or (np.diff(ends) < 0).any():
        return None  # never seen; the fast path relies on it
    starts.setflags(write=False)
    ends.setflags(write=False)
    return starts, ends


def _cells_over(cells: tuple[np.ndarray, np.ndarray], lo: int, hi: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """The output pixels [i0, i1) whose footprints (`_box_cells`) meet input pixels [lo, hi), and the parts of
    their footprints inside [lo, hi) as (starts - lo, lengths); lengths >= 1."""
    starts, ends = cells
    i0 = int(np.searchsorted(ends, lo, side="right"))
    i1 = int(np.searchsorted(starts, hi, side="left"))
    first = np.maximum(starts[i0:i1], lo)
    return i0, i1, first - lo, np.minimum(ends[i0:i1], hi) - first


def _or_runs(a: np.ndarray, starts: np.ndarray, lengths: np.ndarray, *, axis: int) -> np.ndarray:
    """The OR of bool `a` over the runs [starts[k], starts[k] + lengths[k]) along `axis` (lengths >= 1): one gather
    per offset into the runs, so the cost is the output's size times the longest run."""
    a = np.moveaxis(a, axis, 0)
    out = a[starts]
    last = a.shape[0] - 1
    for offset in range(1, int(lengths.max())):
        rows = a[np.minimum(starts + offset, last)]
        ended = lengths <= offset
        if ended.any():
            rows &= ~ended[:, None]
        out |= rows
    return np.moveaxis(out, 0, axis)


def dilate(mask: Image.Image, radius: int) -> Image.Image:
    """Dilate an "L" 0/255 mask by a (2 * radius + 1)-pixel square; returns 0/255 "L".

    Built from Pillow's BoxBlur run once per axis plus a threshold: a box average is non-zero exactly when
    some pixel in the box is, and Pillow's 8-bit rounding keeps a single 255 non-zero up to radius 254; larger
    radii run in steps (square dilations add up). This is O(1) per pixel, where ImageFilter.MaxFilter(2r + 1)
    costs O(r^2). Beyond the image border, edge pixels are repeated, which
    leaves the dilation inside the image unchanged.
    """
    if radius < 0:
        raise ValueError(f"dilation radius must be >= 0, got {radius}")
    while radius > 0:
        step = min(radius, _MAX_BLUR_DILATION)
        mask = mask.filter(ImageFilter.BoxBlur((step, 0))).point(_THRESHOLD_LUT)
        mask = mask.filter(ImageFilter.BoxBlur((0, step))).point(_THRESHOLD_LUT)
        radius -= step
    return mask


def feathered_alpha(mask: Image.Image, *, dilate_px: int, feather_px: int) -> Image.Image:
    """Paste-back alpha ("L") for an "L" 0/255 mask crop: the mask dilated by `dilate_px`, with a ramp inside.

    alpha = BoxBlur(feather_px) of the mask dilated by (dilate_px - feather_px). The blur's support is exactly
    feather_px, so alpha is exactly 0 outside the mask dilated by dilate_px, and exactly 255 wherever the
    whole (2 * feather_px + 1) box is inside the smaller dilation: on the mask itself when
    2 * feather_px <= dilate_px. The crop should extend dilate_px beyond the mask (or to the image border).
    """
    if not 0 <= feather_px <= dilate_px:
        raise ValueError(f"need 0 <= feather_px <= dilate_px, got {feather_px} and {dilate_px}")
    core = dilate(mask, dilate_px - feather_px)
    return core.filter(ImageFilter.BoxBlur(feather_px)) if feather_px else core


def build_region(size: tuple[int, int], *, mask_bytes: bytes | None, box: object, max_pixels: int) -> Region:
    """The region to fill on the upright scene of `size`, from exactly one of a mask image and a box.

    Neither or both is `invalid_box`: the scene row does not say unambiguously what to fill.
    """
    if (mask_bytes is None) == (box is None):
        which = "neither" if mask_bytes is None else "both"
        raise PairError(
            INVALID_BOX, f"a scene needs exactly one of mask_uri and a box (x0, y0, x1, y1); this one has {which}"
        )
    if box is not None:
        return Region.from_box(box, size)
    return Region.from_mask(decode_mask_image(mask_bytes, size=size, max_pixels=max_pixels))
