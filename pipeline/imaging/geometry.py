"""Rectangles: context windows, the largest rectangle inside a mask, aspect fitting, EXIF box mapping.

Boxes are (x0, y0, x1, y1) in pixel-edge coordinates, half-open like Pillow's: pixels x0 <= x < x1 and
y0 <= y < y1. Sizes are (W, H).
"""

from __future__ import annotations

import math

import numpy as np

Box = tuple[int, int, int, int]


def context_window(
    mask_bbox: Box, image_size: tuple[int, int], *, margin: float, min_side: int = 0, min_margin: int = 0
) -> Box:
    """A square window around `mask_bbox`, the crop the model sees.

    Side: the bbox's longer side plus, on each side, max(ceil(margin * longer side), min_margin); at least
    min(min_side, W, H), so that small masks are not upscaled when the image allows; at most max(W, H), since
    a larger window would only add padding. Placement, per axis: centred on the bbox and shifted to lie inside
    the image when the side fits in that axis; otherwise centred on the image, extending beyond both borders
    (the crop is then padded there). The window always contains the bbox, and the bbox grown by `min_margin`
    as far as it lies inside the image.
    """
    bx0, by0, bx1, by1 = mask_bbox
    width, height = image_size
    longer = max(bx1 - bx0, by1 - by0)
    side = longer + 2 * max(math.ceil(margin * longer), min_margin)
    side = max(side, min(min_side, width, height))
    side = min(side, max(width, height))

    def place(lo: int, hi: int, length: int) -> int:
        if side > length:
            return -((side - length) // 2)
        start = (lo + hi - side) // 2
        return min(max(start, 0), length - side)

    x0 = place(bx0, bx1, width)
    y0 = place(by0, by1, height)
    return (x0, y0, x0 + side, y0 + side)


def draft_factor(window_side: int, resolution: int) -> int:
    """The largest JPEG draft factor (1, 2, 4, 8) that keeps at least `resolution` pixels across the window."""
    return max(f for f in (1, 2, 4, 8) if f == 1 or window_side // f >= resolution)


def largest_inscribed_rectangle(mask: np.ndarray) -> Box:
    """The largest-area axis-aligned rectangle whose pixels are all True in `mask` (H, W).

    This is the maximal-rectangle dynamic programme (LeetCode 85's heights/left/right form of the
    largest-rectangle-in-histogram algorithm): for each pixel, `height` is the run of True above it,
    `left`/`right` the widest span over which that whole run stays True; the best rectangle is the max of
    (right - left) * height. The usual row-by-row recurrence is vectorised over the whole array here
    (hand-written: NumPy has no segmented accumulate, so running max/min restart per vertical run by adding
    a per-run offset). Ties go to the first row-major pixel. Raises ValueError when the mask is empty.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    rows_any = np.flatnonzero(m.any(axis=1))
    if rows_any.size == 0:
        raise ValueError("the mask is empty: no rectangle fits inside it")
    cols_any = np.flatnonzero(m.any(axis=0))
    oy, ox = int(rows_any[0]), int(cols_any[0])
    m = m[oy : int(rows_any[-1]) + 1, ox : int(cols_any[-1]) + 1]  # work on the bbox only
    h, w = m.shape
    if m.all():  # a full bbox (a box region): it is the unique largest rectangle
        return (ox, oy, ox + w, oy + h)
    it = np.int64
    cols = np.arange(w, dtype=it)
    # Horizontal runs in each row: the first column of the run containing j, and the column after it.
    run_start = np.maximum.accumulate(np.where(m, it(0), cols + it(1)), axis=1)
    run_end = np.minimum.accumulate(np.where(m[:, ::-1], it(w), cols[::-1]), axis=1)[:, ::-1]
    # The vertical recurrences run on the transpose (mt[j, y] = m[y, j]), so that they accumulate along the
    # contiguous axis. Vertical runs: height of the run ending at (y, j), from the last False pixel above.
    mt = np.ascontiguousarray(m.T)
    rows = np.arange(h, dtype=it)
    last_false = np.maximum.accumulate(np.where(mt, it(-1), rows), axis=1)
    height = rows - last_false
    # Running max / min restarted at each vertical run: add an offset that grows by more than any value from run to
    # run (last_false + 1 numbers the runs down each column; a False pixel shares the number of the run below it,
    # and gets the neutral value, 0 for the max and w for the min).
    offset = (last_false + it(1)) * it(w + 1)
    left = np.maximum.accumulate(np.where(mt, run_start.T, it(0)) + offset, axis=1)
    left -= offset
    right = np.minimum.accumulate(np.where(mt, run_end.T, it(w)) - offset, axis=1)
    right += offset
    area = (right - left) * height
    area[~mt] = 0
    y, j = divmod(int(area.T.argmax()), w)  # row-major order of `m`: ties go to the first pixel
    return (ox + int(left[j, y]), oy + int(y - height[j, y] + 1), ox + int(right[j, y]), oy + int(y + 1))


def fit_centered(rect: Box, aspect: float) -> Box:
    """The largest rectangle of width / height == `aspect` (to the pixel) inside `rect`, centred in it."""
    x0, y0, x1, y1 = rect
    rw, rh = x1 - x0, y1 - y0
    if rw <= 0 or rh <= 0:
        raise ValueError(f"empty rectangle {rect}")
    if not (aspect > 0 and math.isfinite(aspect)):
        raise ValueError(f"aspect must be a positive finite number, got {aspect}")
    if rw >= rh * aspect:
        h = rh
        w = min(rw, max(1, round(rh * aspect)))
    else:
        w = rw
        h = min(rh, max(1, round(rw / aspect)))
    fx0 = x0 + (rw - w) // 2
    fy0 = y0 + (rh - h) // 2
    return (fx0, fy0, fx0 + w, fy0 + h)


def upright_to_stored_box(box: Box, stored_size: tuple[int, int], orientation: int) -> Box:
    """Map a box on the upright image to the same pixels on the stored image (before EXIF orientation).

    `crop(upright, box)` equals `crop(stored, mapped)` transposed by the orientation's method, also for boxes
    reaching beyond the image. Orientation as in EXIF (1..8); the formulas invert Pillow's transposes.
    """
    w, h = stored_size
    u0, v0, u1, v1 = box
    inverse = {
        1: lambda u, v: (u, v),
        2: lambda u, v: (w - u, v),
        3: lambda u, v: (w - u, h - v),
        4: lambda u, v: (u, h - v),
        5: lambda u, v: (v, u),
        6: lambda u, v: (v, h - u),
        7: lambda u, v: (w - v, h - u),
        8: lambda u, v: (w - v, u),
    }[orientation]
    (xa, ya), (xb, yb) = inverse(u0, v0), inverse(u1, v1)
    return (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))


def intersect(a: Box, b: Box) -> Box | None:
    """The intersection of two boxes, or None when it is empty."""
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None
