from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import INVALID_BOX, MASK_EMPTY, MASK_OUT_OF_BOUNDS, PairError
from pipeline.imaging import masks
from pipeline.imaging.masks import Region, dilate, feathered_alpha, mask_from_box, validate_box

from ._helpers import brute_dilate

SIZE = (100, 60)  # W, H


def box_error(box) -> str:
    with pytest.raises(PairError) as excinfo:
        validate_box(box, SIZE)
    assert excinfo.value.message
    return excinfo.value.reason


def test_box_inside():
    assert validate_box((10, 20, 30, 40), SIZE) == (10, 20, 30, 40)
    assert validate_box([0, 0, 100, 60], SIZE) == (0, 0, 100, 60)


def test_box_partly_outside_is_clipped():
    assert validate_box((-10, -5, 30, 40), SIZE) == (0, 0, 30, 40)
    assert validate_box((90, 50, 150, 90), SIZE) == (90, 50, 100, 60)


@pytest.mark.parametrize(
    "box", [(-20, 10, -1, 20), (100, 10, 120, 20), (10, -30, 20, 0), (10, 60, 20, 70), (-9, -9, 0, 0)]
)
def test_box_entirely_outside(box):
    assert box_error(box) == MASK_OUT_OF_BOUNDS


@pytest.mark.parametrize(
    "box",
    [
        (30, 10, 20, 20),  # inverted x
        (10, 20, 20, 10),  # inverted y
        (10, 10, 10, 20),  # zero width
        (10, 10, 20, 10),  # zero height
        (float("nan"), 0, 10, 10),
        (0, 0, float("inf"), 10),
        ("0", 0, 10, 10),
        (None, 0, 10, 10),
        (True, 0, 10, 10),
        (0.5, 0, 10, 10),
        (0, 0, 10),
        (0, 0, 10, 10, 10),
        "abcd",
        None,
        42,
    ],
)
def test_invalid_boxes(box):
    assert box_error(box) == INVALID_BOX


def test_integral_floats_and_numpy_numbers_accepted():
    assert validate_box((10.0, 20.0, 30.0, 40.0), SIZE) == (10, 20, 30, 40)
    assert validate_box(np.array([1, 2, 3, 4], dtype=np.int64), SIZE) == (1, 2, 3, 4)
    assert validate_box(tuple(np.float32(v) for v in (1, 2, 3, 4)), SIZE) == (1, 2, 3, 4)


def test_mask_from_box():
    mask = mask_from_box((-5, 10, 20, 70), SIZE)
    assert mask.shape == (60, 100) and mask.dtype == bool
    assert mask.sum() == 20 * 50 and mask[10:60, 0:20].all()


def test_region_from_mask_bbox_and_threshold():
    grey = np.zeros((60, 100), dtype=np.uint8)
    grey[5, 5] = 127  # not region: below the threshold, but non-zero
    grey[20:30, 40:45] = 128
    region = Region.from_mask(Image.fromarray(grey))
    assert region.bbox == (40, 20, 45, 30) and region.size == SIZE
    assert region.crop((0, 0, 100, 60)).sum() == 50


def test_empty_mask():
    with pytest.raises(PairError) as excinfo:
        Region.from_mask(np.zeros((60, 100), dtype=bool))
    assert excinfo.value.reason == MASK_EMPTY
    with pytest.raises(PairError) as excinfo:
        Region.from_mask(Image.fromarray(np.full((6, 10), 127, dtype=np.uint8)))
    assert excinfo.value.reason == MASK_EMPTY


def test_all_white_mask_is_valid():
    region = Region.from_mask(np.ones((60, 100), dtype=bool))
    assert region.bbox == (0, 0, 100, 60)


def test_region_crop_pads_false_beyond_the_image():
    for region in (Region.from_box((0, 0, 10, 10), SIZE), Region.from_mask(mask_from_box((0, 0, 10, 10), SIZE))):
        crop = region.crop((-5, -5, 5, 5))
        assert crop.shape == (10, 10)
        assert crop[5:, 5:].all() and not crop[:5].any() and not crop[:, :5].any()


@pytest.mark.parametrize(
    "box,window,size",
    [
        ((40, 20, 60, 40), (20, 0, 80, 60), 16),
        ((0, 0, 13, 7), (-10, -30, 90, 70), 24),
        ((37, 11, 38, 12), (0, 0, 60, 60), 8),  # one pixel, downscaled
        ((10, 10, 90, 50), (-20, -40, 120, 100), 64),
        ((3, 4, 17, 9), (0, 0, 20, 20), 64),  # upscaled
    ],
)
def test_resized_crop_box_and_mask_paths_agree(box, window, size):
    """The box path (exact integer overlap) and the mask path (BOX resampling) mark the same pixels, except that
    the mask path may leave out edge pixels whose overlap rounds to 0 in 8 bits."""
    from_box = Region.from_box(box, SIZE).resized_crop(window, size)
    from_mask = Region.from_mask(mask_from_box(box, SIZE)).resized_crop(window, size)
    assert from_box.any() and not (from_mask & ~from_box).any()
    ys, xs = np.nonzero(from_box)
    interior = from_box.copy()
    interior[[ys.min(), ys.max()], :] = False
    interior[:, [xs.min(), xs.max()]] = False
    assert not (interior & ~from_mask).any()


@pytest.mark.parametrize("seed", range(4))
def test_resized_crop_equals_pillow_box_resampling(seed):
    """The fast path (OR over each output pixel's BOX footprint, on the bbox only) gives exactly what Pillow's BOX
    resize of the whole thresholded window gives: grey masks, unpacked regions, windows beyond the image,
    downscaling, upscaling, sizes that are not powers of 2."""
    rng = np.random.default_rng(seed)
    fast = 0
    for _ in range(150):
        width, height = (int(v) for v in rng.integers(5, 160, 2))
        on = rng.random((height, width)) < rng.choice([0.001, 0.02, 0.4])
        on[rng.integers(0, height), rng.integers(0, width)] = True
        grey = Image.fromarray((on * rng.integers(60, 256, on.shape)).astype(np.uint8))  # some < 128: not region
        try:
            region = Region.from_mask(grey)
        except PairError:
            continue
        if rng.random() < 0.3:
            region = Region.unpack(region.pack())
        side_x = int(rng.integers(3, 400))
        side_y = side_x if rng.random() < 0.7 else int(rng.integers(3, 400))
        size = int(rng.choice([4, 16, 24, 64, 100, 128, 384, 512]))
        x0, y0 = int(rng.integers(-side_x, width)), int(rng.integers(-side_y, height))
        window = (x0, y0, x0 + side_x, y0 + side_y)
        expected = region._resized_crop_pillow(window, size)
        assert np.array_equal(region.resized_crop(window, size), expected), (window, size)
        fast += masks._box_cells(side_x, size) is not None and masks._box_cells(side_y, size) is not None
    assert fast > 40  # most cases took the fast path


def test_box_cells_match_pillow_footprints():
    """`_box_cells` reproduces Pillow's BOX footprints: resizing an "F" ramp gives each footprint's mean index."""
    for side, size in [(1800, 512), (513, 512), (512, 512), (1000, 384), (389, 384), (7, 20), (8191, 512)]:
        cells = masks._box_cells(side, size)
        assert cells is not None
        starts, ends = cells
        ramp = Image.fromarray(np.arange(side, dtype=np.float32)[None, :], mode="F")
        means = np.asarray(ramp.resize((size, 1), Image.Resampling.BOX))[0]
        assert np.array_equal(means * 2, starts + ends - 1)
    assert masks._box_cells(512 * 17, 512) is None  # footprints of 17 pixels: 8-bit averages may round to 0


def test_region_crop_thresholds_like_crop_image():
    grey = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 50), dtype=np.uint8))
    region = Region.from_mask(grey)
    for rg in (region, Region.unpack(region.pack())):
        for box in [(0, 0, 50, 40), (-7, 5, 30, 60), (10, 10, 11, 11), (45, 35, 80, 90)]:
            assert np.array_equal(rg.crop(box), np.asarray(rg.crop_image(box)) > 0)


def test_resized_crop_keeps_a_sparse_mask_in_a_large_window():
    mask = np.zeros((2000, 2000), dtype=bool)
    mask[1000, 1000] = mask[10, 10] = True  # each covers 1/(125^2) of an output pixel: 0 in 8-bit averages
    crop = Region.from_mask(mask).resized_crop((0, 0, 2000, 2000), 16)
    assert np.argwhere(crop).tolist() == [[0, 0], [8, 8]]


def test_resized_crop_covers_partial_pixels():
    # Window 0..30 at 10 px: output pixel i covers [3i, 3i + 3); box 4..5 touches only pixel 1.
    crop = Region.from_box((4, 4, 5, 5), SIZE).resized_crop((0, 0, 30, 30), 10)
    assert np.argwhere(crop).tolist() == [[1, 1]]


@pytest.mark.parametrize("radius", [0, 1, 3, 8, 20])
def test_dilate_matches_brute_force(radius):
    rng = np.random.default_rng(radius)
    mask = rng.random((40, 50)) < 0.01
    mask[0, 10] = mask[39, 49] = mask[20, 0] = True  # at the borders
    got = np.asarray(dilate(Image.fromarray(mask.view(np.uint8) * 255), radius))
    assert set(np.unique(got)) <= {0, 255}
    assert np.array_equal(got > 0, brute_dilate(mask, radius))


def test_dilate_single_pixel_large_radii():
    mask = np.zeros((3, 600), dtype=np.uint8)
    mask[1, 300] = 255
    for radius in (254, 255, 290):  # one pass; more than one
        got = np.asarray(dilate(Image.fromarray(mask), radius)) > 0
        for row in got:  # 300 +- radius, and all three rows
            assert np.array_equal(np.flatnonzero(row), np.arange(max(0, 300 - radius), min(600, 301 + radius)))
    with pytest.raises(ValueError):
        dilate(Image.fromarray(mask), -1)


@pytest.mark.parametrize("dilate_px,feather_px", [(8, 4), (8, 0), (4, 4), (12, 5), (0, 0)])
def test_feathered_alpha_lies_inside_the_dilated_mask(dilate_px, feather_px):
    mask = np.zeros((60, 80), dtype=bool)
    mask[20:35, 30:50] = True
    mask[34:45, 45:47] = True
    mask[0:10, 0:5] = True  # touches two borders
    alpha = np.asarray(
        feathered_alpha(Image.fromarray(mask.view(np.uint8) * 255), dilate_px=dilate_px, feather_px=feather_px)
    )
    dilated = brute_dilate(mask, dilate_px)
    assert not alpha[~dilated].any()  # exactly 0 outside the dilated mask
    if 2 * feather_px <= dilate_px:
        assert (alpha[mask] == 255).all()  # the mask itself is fully replaced
    if feather_px:
        assert ((alpha > 0) & (alpha < 255)).any()  # there is a ramp
    assert alpha[0, 0] == 255  # no ramp against the image border


def test_feather_must_fit_inside_dilation():
    with pytest.raises(ValueError):
        feathered_alpha(Image.new("L", (4, 4)), dilate_px=2, feather_px=3)
