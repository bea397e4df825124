from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.imaging.decode import TRANSPOSE
from pipeline.imaging.geometry import (
    context_window,
    draft_factor,
    fit_centered,
    intersect,
    largest_inscribed_rectangle,
    upright_to_stored_box,
)
from pipeline.synthetic.images import noise


def window(bbox, size=(4000, 3000), margin=0.25, min_side=512, min_margin=8):
    return context_window(bbox, size, margin=margin, min_side=min_side, min_margin=min_margin)


def check_window(win, bbox, size, min_margin):
    x0, y0, x1, y1 = win
    width, height = size
    assert x1 - x0 == y1 - y0 > 0
    assert x0 <= bbox[0] and y0 <= bbox[1] and x1 >= bbox[2] and y1 >= bbox[3]
    grown = intersect(
        (bbox[0] - min_margin, bbox[1] - min_margin, bbox[2] + min_margin, bbox[3] + min_margin), (0, 0, width, height)
    )
    assert intersect(grown, win) == grown
    side = x1 - x0
    assert side <= max(width, height)
    for lo, hi, length in ((x0, x1, width), (y0, y1, height)):
        if side <= length:
            assert lo >= 0 and hi <= length  # inside the image when it fits
        else:
            assert lo <= 0 and hi >= length and abs((0 - lo) - (hi - length)) <= 1  # centred on the image


def test_window_centre():
    win = window((1800, 1300, 2200, 1700))  # 400 x 400, margin 100 each side
    assert win == (1700, 1200, 2300, 1800)
    check_window(win, (1800, 1300, 2200, 1700), (4000, 3000), 8)
    assert window((1000, 1000, 2000, 1600)) == (750, 550, 2250, 2050)  # 1000 + 2 * 250
    assert window((1900, 1400, 1910, 1410)) == (1649, 1149, 2161, 1661)  # small mask: at least 512


@pytest.mark.parametrize(
    "bbox",
    [
        (0, 1000, 300, 1300),
        (3700, 1000, 4000, 1300),
        (1000, 0, 1300, 300),
        (1000, 2700, 1300, 3000),
        (0, 0, 10, 10),
        (3990, 2990, 4000, 3000),
    ],
    ids=["left", "right", "top", "bottom", "top-left-corner", "bottom-right-corner"],
)
def test_window_at_each_border_stays_inside(bbox):
    win = window(bbox)
    assert win[2] - win[0] == 512
    check_window(win, bbox, (4000, 3000), 8)


def test_window_for_mask_larger_than_model_resolution():
    bbox = (500, 400, 2500, 2000)  # 2000 wide
    win = window(bbox)
    assert win[2] - win[0] == 3000  # 2000 + 2 * 500: fits the 3000 height exactly
    check_window(win, bbox, (4000, 3000), 8)


def test_window_for_mask_covering_the_image():
    win = window((0, 0, 4000, 3000))
    assert win == (0, -500, 4000, 3500)  # capped at the longer side, centred on the short one
    check_window(win, (0, 0, 4000, 3000), (4000, 3000), 8)
    assert window((0, 0, 300, 300), size=(300, 300)) == (0, 0, 300, 300)  # square image: the whole image


def test_window_for_image_smaller_than_model_resolution():
    win = window((100, 50, 120, 60), size=(300, 200))
    assert win[2] - win[0] == 200  # min_side limited by the shorter side: no padding needed
    check_window(win, (100, 50, 120, 60), (300, 200), 8)


def test_window_min_margin_and_one_pixel_image():
    assert window((50, 50, 54, 54), size=(100, 100), min_side=0, min_margin=8) == (42, 42, 62, 62)
    assert window((0, 0, 1, 1), size=(1, 1)) == (0, 0, 1, 1)


def test_window_properties_random():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        width, height = (int(v) for v in rng.integers(1, 400, 2))
        x0, x1 = sorted(int(v) for v in rng.integers(0, width + 1, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height + 1, 2))
        bbox = (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))
        if bbox[2] > width or bbox[3] > height:
            continue
        margin, min_side, min_margin = float(rng.random()), int(rng.integers(0, 600)), int(rng.integers(0, 20))
        win = window(bbox, size=(width, height), margin=margin, min_side=min_side, min_margin=min_margin)
        check_window(win, bbox, (width, height), min_margin)


def test_draft_factor():
    assert [draft_factor(side, 512) for side in (100, 512, 1023, 1024, 2047, 2048, 4096, 100_000)] == [
        1,
        1,
        1,
        2,
        2,
        4,
        8,
        8,
    ]


def brute_largest(mask: np.ndarray) -> int:
    """Largest all-True rectangle area, trying every pair of rows (straightforward, no histogram trick)."""
    h, w = mask.shape
    best = 0
    for y0 in range(h):
        columns = np.ones(w, dtype=bool)
        for y1 in range(y0 + 1, h + 1):
            columns &= mask[y1 - 1]
            run = 0
            for full in columns:
                run = run + 1 if full else 0
                best = max(best, run * (y1 - y0))
    return best


def check_rect(mask, rect):
    x0, y0, x1, y1 = rect
    assert x0 < x1 and y0 < y1 and mask[y0:y1, x0:x1].all()


def test_lir_rectangle():
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:30, 5:45] = True
    assert largest_inscribed_rectangle(mask) == (5, 10, 45, 30)
    assert largest_inscribed_rectangle(np.ones((3, 4), dtype=bool)) == (0, 0, 4, 3)
    assert largest_inscribed_rectangle(np.eye(5, dtype=bool)[:, ::-1]) in [(4 - i, i, 5 - i, i + 1) for i in range(5)]


def test_lir_l_shape():
    mask = np.zeros((40, 40), dtype=bool)
    mask[0:40, 0:10] = True  # 400
    mask[30:40, 0:40] = True  # 400; the vertical bar wins: 10 x 40 = 400 ties with 40 x 10
    rect = largest_inscribed_rectangle(mask)
    check_rect(mask, rect)
    assert (rect[2] - rect[0]) * (rect[3] - rect[1]) == 400
    mask[30:40, 0:40] = False
    mask[25:40, 0:40] = True  # now the horizontal bar: 40 x 15 = 600
    assert largest_inscribed_rectangle(mask) == (0, 25, 40, 40)


def test_lir_circle():
    yy, xx = np.mgrid[0:101, 0:101]
    mask = (xx - 50) ** 2 + (yy - 50) ** 2 <= 40**2
    rect = largest_inscribed_rectangle(mask)
    check_rect(mask, rect)
    w, h = rect[2] - rect[0], rect[3] - rect[1]
    assert w * h >= 0.95 * 2 * 40**2  # the inscribed square has area 2 r^2
    assert abs(w - h) <= 4


def test_lir_matches_brute_force_on_random_masks():
    rng = np.random.default_rng(1)
    for i in range(400):
        h, w = (int(v) for v in rng.integers(1, 16, 2))
        if i % 2:
            mask = rng.random((h, w)) < rng.uniform(0.3, 0.95)
        else:  # unions of rectangles, closer to real masks
            mask = np.zeros((h, w), dtype=bool)
            for _ in range(int(rng.integers(1, 4))):
                y0, y1 = sorted(int(v) for v in rng.integers(0, h + 1, 2))
                x0, x1 = sorted(int(v) for v in rng.integers(0, w + 1, 2))
                mask[y0:y1, x0:x1] = True
        if not mask.any():
            continue
        rect = largest_inscribed_rectangle(mask)
        check_rect(mask, rect)
        assert (rect[2] - rect[0]) * (rect[3] - rect[1]) == brute_largest(mask)


def row_by_row_lir(mask: np.ndarray):
    """The textbook maximal-rectangle DP (heights / left / right, one row at a time), keeping the first pixel in
    row-major order that reaches the largest area: the rectangle `largest_inscribed_rectangle` documents."""
    h, w = mask.shape
    height = np.zeros(w, dtype=int)
    left = np.zeros(w, dtype=int)
    right = np.full(w, w)
    best, rect = 0, None
    for y in range(h):
        row = mask[y]
        height = np.where(row, height + 1, 0)
        start, run_start = 0, np.zeros(w, dtype=int)
        for x in range(w):
            start = start if row[x] else x + 1
            run_start[x] = start
        end, run_end = w, np.full(w, w)
        for x in range(w - 1, -1, -1):
            end = end if row[x] else x
            run_end[x] = end
        left = np.where(row, np.maximum(left, run_start), 0)
        right = np.where(row, np.minimum(right, run_end), w)
        for x in range(w):
            area = (right[x] - left[x]) * height[x] if row[x] else 0
            if area > best:
                best, rect = area, (int(left[x]), y - int(height[x]) + 1, int(right[x]), y + 1)
    return rect


def test_lir_is_the_row_major_first_of_the_textbook_dp():
    """Same rectangle, ties included, as the row-by-row recurrence (the vectorised one must not drift from it)."""
    rng = np.random.default_rng(5)
    for i in range(300):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        mask = rng.random((h, w)) < rng.choice([0.3, 0.7, 0.9, 0.98])
        if i % 3 == 0:
            mask = np.pad(mask, ((1, 2), (3, 0)))  # the bbox is not the whole array
        if not mask.any():
            continue
        assert largest_inscribed_rectangle(mask) == row_by_row_lir(mask), i
    yy, xx = np.mgrid[0:120, 0:90]
    ellipse = ((xx - 40) / 35) ** 2 + ((yy - 70) / 45) ** 2 <= 1
    assert largest_inscribed_rectangle(ellipse) == row_by_row_lir(ellipse)


def test_lir_of_a_full_box_is_the_box():
    mask = np.zeros((300, 400), dtype=bool)
    mask[17:250, 3:399] = True
    assert largest_inscribed_rectangle(mask) == (3, 17, 399, 250)
    mask[100, 200] = False  # no longer full: the general path
    assert largest_inscribed_rectangle(mask) == row_by_row_lir(mask)


def test_lir_empty_mask():
    with pytest.raises(ValueError):
        largest_inscribed_rectangle(np.zeros((4, 4), dtype=bool))


@pytest.mark.parametrize(
    "rect,aspect,expected",
    [
        ((0, 0, 100, 100), 1.0, (0, 0, 100, 100)),
        ((0, 0, 100, 100), 2.0, (0, 25, 100, 75)),
        ((0, 0, 100, 100), 0.5, (25, 0, 75, 100)),
        ((10, 20, 110, 70), 1.0, (35, 20, 85, 70)),
        ((0, 0, 10, 10), 1000.0, (0, 4, 10, 5)),  # never thinner than a pixel
        ((5, 5, 6, 6), 0.3, (5, 5, 6, 6)),
    ],
)
def test_fit_centered(rect, aspect, expected):
    assert fit_centered(rect, aspect) == expected


def test_fit_centered_random():
    rng = np.random.default_rng(2)
    for _ in range(1000):
        x0, y0 = (int(v) for v in rng.integers(-50, 50, 2))
        rw, rh = (int(v) for v in rng.integers(1, 300, 2))
        aspect = float(np.exp(rng.uniform(-3, 3)))
        fx0, fy0, fx1, fy1 = fit_centered((x0, y0, x0 + rw, y0 + rh), aspect)
        fw, fh = fx1 - fx0, fy1 - fy0
        assert x0 <= fx0 and y0 <= fy0 and fx1 <= x0 + rw and fy1 <= y0 + rh
        assert fw == rw or fh == rh  # as large as possible: touches two sides
        assert abs((fx0 - x0) - (x0 + rw - fx1)) <= 1 and abs((fy0 - y0) - (y0 + rh - fy1)) <= 1
        if fw > 1 and fh > 1:
            assert abs(fw / fh - aspect) <= aspect * (1 / fw + 1 / fh) + 1e-9  # aspect kept to the pixel


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("box", [(1, 2, 5, 4), (0, 0, 7, 5), (-2, 1, 3, 9), (4, -3, 11, 2)])
def test_upright_to_stored_box_matches_pillow(orientation, box):
    stored = Image.fromarray(noise(7, 5, seed=orientation))
    method = TRANSPOSE.get(orientation)
    upright = stored.transpose(method) if method is not None else stored
    mapped = upright_to_stored_box(box, stored.size, orientation)
    piece = stored.crop(mapped)
    piece = piece.transpose(method) if method is not None else piece
    assert np.array_equal(np.asarray(piece), np.asarray(upright.crop(box)))
