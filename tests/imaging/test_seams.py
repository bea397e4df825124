"""Seam metrics: closed cases (constant colours), the exact outside count, an empty band, a crop equal to the scene."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

from pipeline.imaging.composite import paste_back, paste_box
from pipeline.imaging.crop import crop_resized
from pipeline.imaging.geometry import context_window
from pipeline.imaging.masks import Region, feathered_alpha
from pipeline.imaging.seams import SeamMetrics, delta_e_2000, outside_changed, seam_metrics
from pipeline.synthetic.images import photo

SCENE = (120, 110, 100)
SHIFTED = (128, 104, 93)  # SCENE moved by (+8, -6, -7)


def reference_delta_e(a, b):
    """ΔE00 of two sRGB colours, by scikit-image on the two colours alone."""
    lab = rgb2lab(np.array([[a, b]], dtype=np.uint8))
    return float(deltaE_ciede2000(lab[0, 0], lab[0, 1]))


def paste(scene, region, generated, *, res=32, **kwargs):
    window = context_window(region.bbox, scene.size, margin=0.25, min_side=res, min_margin=8)
    return paste_back(scene, generated, window, region, dilate_px=8, feather_px=4, measure=True, **kwargs)


@pytest.mark.parametrize("scene_size,res", [((200, 150), 32), ((640, 480), 64)])
def test_a_constant_offset_gives_its_delta_e(scene_size, res):
    """Scene and crop each one colour: every band and region sample is that pair of colours, whatever the blocks."""
    scene = Image.new("RGB", scene_size, SCENE)
    region = Region.from_mask(_ellipse(scene_size))
    generated = np.full((res, res, 3), SHIFTED, dtype=np.uint8)
    metrics = paste(scene, region, generated, res=res)
    expected = reference_delta_e(SCENE, SHIFTED)
    assert expected > 3
    assert metrics.seam_delta_e == pytest.approx(expected, abs=1e-9)
    assert metrics.region_delta_e == pytest.approx(expected, abs=1e-9)
    assert metrics.outside_changed_px == 0


def _ellipse(size):
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx - w * 0.5) / (w * 0.2)) ** 2 + ((yy - h * 0.55) / (h * 0.25)) ** 2 <= 1


def test_delta_e_2000_of_equal_colours_is_zero_and_symmetric():
    a = np.array([[10, 200, 30], [255, 255, 255], [0, 0, 0]], dtype=np.uint8)
    b = np.array([[12, 190, 35], [250, 255, 255], [0, 0, 1]], dtype=np.uint8)
    assert np.array_equal(delta_e_2000(a, a), np.zeros(3))
    assert np.allclose(delta_e_2000(a, b), delta_e_2000(b, a))
    assert delta_e_2000(a, b)[0] == pytest.approx(reference_delta_e(tuple(a[0]), tuple(b[0])))


def test_a_crop_equal_to_the_scene_reads_near_zero():
    """The generated crop is the scene's own crop: what is pasted differs from the scene only by resampling."""
    scene = photo(300, 200, seed=7)
    region = Region.from_box((100, 50, 180, 120), (300, 200))
    window = context_window(region.bbox, (300, 200), margin=0.25, min_side=64, min_margin=8)
    generated = np.asarray(crop_resized(scene, window, (64, 64)))
    metrics = paste_back(scene, generated, window, region, dilate_px=8, feather_px=4, measure=True)
    assert metrics.seam_delta_e < 1 and metrics.region_delta_e < 1 and metrics.outside_changed_px == 0


def test_no_band_is_nan():
    """A mask covering the whole image leaves no pixel outside the region: the seam is NaN, the region is not."""
    scene = Image.new("RGB", (60, 40), SCENE)
    region = Region.from_mask(np.ones((40, 60), dtype=bool))
    metrics = paste(scene, region, np.full((32, 32, 3), SHIFTED, dtype=np.uint8))
    assert math.isnan(metrics.seam_delta_e)
    assert metrics.region_delta_e == pytest.approx(reference_delta_e(SCENE, SHIFTED))
    assert metrics.outside_changed_px == 0
    nothing = SeamMetrics.nothing_pasted()
    assert math.isnan(nothing.seam_delta_e) and math.isnan(nothing.region_delta_e) and nothing.outside_changed_px == 0


def test_without_measure_nothing_is_returned():
    scene = Image.new("RGB", (60, 40), SCENE)
    region = Region.from_box((20, 10, 40, 30), (60, 40))
    window = context_window(region.bbox, (60, 40), margin=0.25, min_side=32, min_margin=8)
    assert paste_back(scene, np.zeros((32, 32, 3), np.uint8), window, region, dilate_px=8, feather_px=4) is None


def test_outside_changed_counts_exactly_where_alpha_is_zero():
    rng = np.random.default_rng(0)
    before = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    alpha = np.zeros((40, 50), dtype=np.uint8)
    alpha[10:30, 10:40] = rng.integers(1, 256, (20, 30), dtype=np.uint8)
    after = before.copy()
    after[10:30, 10:40] ^= 0xFF  # inside: allowed to change
    ys, xs = np.array([0, 5, 39, 35]), np.array([0, 49, 3, 45])
    after[ys, xs, np.array([0, 1, 2, 2])] ^= 1  # four pixels outside, one channel each, off by one
    images = [Image.fromarray(a) for a in (before, after)]
    assert outside_changed(*images, Image.fromarray(alpha)) == 4
    assert outside_changed(images[0], images[0], Image.fromarray(alpha)) == 0


def test_seam_metrics_sees_band_and_region_apart():
    """Scene grey, pasted crop grey in the band and red in the region: the seam reads 0, the region red vs grey."""
    size = (96, 80)
    region = Region.from_box((30, 20, 70, 60), size)
    work = paste_box(size, (0, 0, 96, 96), region, dilate_px=8)
    inside = region.crop_image(work)
    alpha = feathered_alpha(inside, dilate_px=8, feather_px=4)
    grey = Image.new("RGB", (work[2] - work[0], work[3] - work[1]), (128, 128, 128))
    pasted = grey.copy()
    pasted.paste((200, 30, 30), (8, 8, 48, 48))
    for block in (1, 2, 4):
        metrics = seam_metrics(grey, grey, pasted, alpha, inside, block=block)
        assert metrics.seam_delta_e == 0
        assert metrics.region_delta_e == pytest.approx(reference_delta_e((128, 128, 128), (200, 30, 30)))
