"""Colour matching before paste-back: `none` is the old paste-back bit for bit, every method leaves the outside alone,
a global drift of the form a method fits is removed, and the setting refuses unknown methods."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from PIL import Image
from skimage.color import lab2rgb, rgb2lab

from pipeline.imaging.color_match import (
    COLOR_MATCH_METHODS,
    MIN_CELLS,
    CellGrid,
    context_samples,
    fit_color_map,
)
from pipeline.imaging.composite import paste_back, paste_box
from pipeline.imaging.crop import crop_resized
from pipeline.imaging.geometry import Box, context_window
from pipeline.imaging.masks import Region, feathered_alpha
from pipeline.imaging.settings import ImageSettings
from pipeline.synthetic.images import noise, photo

from ._helpers import brute_dilate

MAPS = [m for m in COLOR_MATCH_METHODS if m not in ("none", "poisson")]  # one colour map for the whole crop


# Copied from pipeline/imaging/composite.py `paste_back` before colour matching and metrics existed.
def reference_paste_back(scene, generated, window, region, *, dilate_px, feather_px,
                         resample=Image.Resampling.BICUBIC):
    wx0, wy0, wx1, wy1 = window
    work = paste_box(scene.size, window, region, dilate_px=dilate_px)
    if work is None:
        return scene
    x0, y0, x1, y1 = work
    alpha = feathered_alpha(region.crop_image(work), dilate_px=dilate_px, feather_px=feather_px)
    gen_h, gen_w = generated.shape[:2]
    scale_x, scale_y = gen_w / (wx1 - wx0), gen_h / (wy1 - wy0)
    source = ((x0 - wx0) * scale_x, (y0 - wy0) * scale_y, (x1 - wx0) * scale_x, (y1 - wy0) * scale_y)
    patch = Image.fromarray(generated).resize((x1 - x0, y1 - y0), resample, box=source)
    scene.paste(patch, (x0, y0), alpha)
    return scene


def ellipse(size, centre, radii):
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    return ((xx - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 <= 1


CASES = {
    "box in the middle": ((200, 150), lambda size: Region.from_box((80, 60, 120, 90), size), 32),
    "ellipse": ((200, 150), lambda size: Region.from_mask(ellipse(size, (100, 70), (30, 20))), 32),
    "at the border": ((200, 150), lambda size: Region.from_box((0, 40, 30, 80), size), 32),
    "window beyond the image": ((120, 80), lambda size: Region.from_box((10, 5, 110, 75), size), 40),
    "whole image": ((60, 40), lambda size: Region.from_mask(np.ones((40, 60), dtype=bool)), 32),
}


def drifted_pair(name, seed=0):
    """A photo-like scene, its region and window, and a crop of the scene with a global RGB gain and offset."""
    size, make_region, res = CASES[name]
    scene = photo(*size, seed=seed)
    region = make_region(size)
    window = context_window(region.bbox, size, margin=0.25, min_side=res, min_margin=8)
    crop = np.asarray(crop_resized(scene, window, (res, res)), dtype=np.float64)
    drifted = np.clip(np.rint(crop * [1.08, 0.94, 1.0] + [4, -6, 8]), 0, 255).astype(np.uint8)
    return scene, region, window, drifted


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR])
def test_none_is_the_old_paste_back_bit_for_bit(name, resample):
    scene, region, window, generated = drifted_pair(name)
    expected = reference_paste_back(scene.copy(), generated, window, region, dilate_px=8, feather_px=4,
                                    resample=resample)
    for measure in (False, True):
        out = scene.copy()
        paste_back(out, generated, window, region, dilate_px=8, feather_px=4, resample=resample, measure=measure)
        assert out.tobytes() == expected.tobytes()


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("method", COLOR_MATCH_METHODS)
def test_every_method_leaves_the_outside_unchanged(name, method):
    scene, region, window, _ = drifted_pair(name)
    generated = noise(window[2] - window[0], window[3] - window[1], seed=3)[:32, :32]  # anything at all
    out = scene.copy()
    metrics = paste_back(out, generated, window, region, dilate_px=8, feather_px=4, color_match=method, measure=True)
    dilated = brute_dilate(region.crop((0, 0, *scene.size)), 8)
    assert np.array_equal(np.asarray(out)[~dilated], np.asarray(scene)[~dilated])
    assert metrics.outside_changed_px == 0


@pytest.mark.parametrize("method", ["affine", "poly2"])
def test_rgb_methods_remove_a_global_gain_and_offset(method):
    scene, region, window, drifted = drifted_pair("ellipse")
    clean = np.asarray(crop_resized(scene, window, (32, 32)))
    floor = paste_back(scene.copy(), clean, window, region, dilate_px=8, feather_px=4, measure=True)
    before = paste_back(scene.copy(), drifted, window, region, dilate_px=8, feather_px=4, measure=True)
    after = paste_back(scene.copy(), drifted, window, region, dilate_px=8, feather_px=4, color_match=method,
                       measure=True)
    assert before.seam_delta_e > 3
    assert after.seam_delta_e < floor.seam_delta_e + 0.3
    assert after.region_delta_e < floor.region_delta_e + 0.3


def test_poisson_removes_a_colour_difference_that_varies_across_the_crop():
    """An offset that grows across the crop (a linear field, harmonic) is no single map: Poisson's membrane removes it
    inside the region too, a global fit only on average."""
    scene, region, window, _ = drifted_pair("ellipse")
    clean = np.asarray(crop_resized(scene, window, (32, 32)))
    ramp = np.linspace(-12, 12, 32)
    field = np.zeros((32, 32, 3))
    field[..., 0], field[..., 1], field[..., 2] = ramp[None, :], ramp[:, None], -ramp[None, :]
    drifted = np.clip(np.rint(clean + field), 0, 255).astype(np.uint8)
    floor = paste_back(scene.copy(), clean, window, region, dilate_px=8, feather_px=4, measure=True)
    before = paste_back(scene.copy(), drifted, window, region, dilate_px=8, feather_px=4, measure=True)
    runs = {method: paste_back(scene.copy(), drifted, window, region, dilate_px=8, feather_px=4, color_match=method,
                               measure=True) for method in ("affine", "poisson")}
    assert before.seam_delta_e > 3
    assert runs["poisson"].seam_delta_e < floor.seam_delta_e + 0.5
    assert runs["poisson"].region_delta_e < floor.region_delta_e + 0.5
    assert runs["affine"].seam_delta_e > runs["poisson"].seam_delta_e + 1


def test_mean_std_removes_a_global_lab_shift():
    scene, region, window, _ = drifted_pair("ellipse")
    clean = np.asarray(crop_resized(scene, window, (32, 32)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        shifted = lab2rgb(rgb2lab(clean) + [4.0, -3.0, 5.0])
    drifted = np.rint(shifted * 255).astype(np.uint8)
    floor = paste_back(scene.copy(), clean, window, region, dilate_px=8, feather_px=4, measure=True)
    before = paste_back(scene.copy(), drifted, window, region, dilate_px=8, feather_px=4, measure=True)
    after = paste_back(scene.copy(), drifted, window, region, dilate_px=8, feather_px=4, color_match="mean_std",
                       measure=True)
    assert before.seam_delta_e > 3
    assert after.seam_delta_e < floor.seam_delta_e + 0.3


@pytest.mark.parametrize("method", MAPS)
def test_a_crop_without_drift_is_left_almost_as_it_is(method):
    """The context fits the identity: matching a crop that has no drift changes it by at most a level or two."""
    scene, region, window, _ = drifted_pair("box in the middle")
    clean = np.asarray(crop_resized(scene, window, (32, 32)))
    color_map = fit_color_map(method, *context_samples(scene, clean, window, exclude=_work(scene, window, region)))
    assert color_map is not None
    moved = np.abs(np.asarray(color_map.apply(Image.fromarray(clean)), dtype=int) - clean)
    assert moved.mean() < 1 and moved.max() <= 3


def test_the_fit_never_sees_the_paste_box():
    """What the model put in the region (and the band around it) is not context: garbage there changes no sample."""
    scene, region, window, _ = drifted_pair("box in the middle")
    clean = np.asarray(crop_resized(scene, window, (32, 32)))
    work = _work(scene, window, region)
    spoiled = clean.copy()
    scale = 32 / (window[2] - window[0])
    x0, y0 = (math.floor((v - o) * scale) for v, o in zip(work[:2], window[:2], strict=True))
    x1, y1 = (math.ceil((v - o) * scale) for v, o in zip(work[2:], window[:2], strict=True))
    spoiled[y0:y1, x0:x1] = (255, 0, 255)  # every crop pixel that meets the box
    generated, scene_samples = context_samples(scene, clean, window, exclude=work)
    spoiled_samples, _ = context_samples(scene, spoiled, window, exclude=work)
    assert len(generated) >= MIN_CELLS
    assert np.array_equal(generated, spoiled_samples)
    assert np.abs(generated - scene_samples).mean() < 4  # the same places of the crop and of the scene


@pytest.mark.parametrize("method", ["mean_std", "poisson"])
def test_too_little_context_pastes_the_crop_unmapped(method):
    scene, region, window, generated = drifted_pair("whole image")
    assert fit_color_map("affine", *context_samples(scene, generated, window, exclude=_work(scene, window, region))) \
        is None
    plain, matched = scene.copy(), scene.copy()
    paste_back(plain, generated, window, region, dilate_px=8, feather_px=4)
    paste_back(matched, generated, window, region, dilate_px=8, feather_px=4, color_match=method)
    assert plain.tobytes() == matched.tobytes()


@pytest.mark.parametrize("origin", [(37, 21), (0, 0), (-5, 60)])
def test_cells_covering_an_image_are_the_cells_its_pixels_fall_in(origin):
    scene = photo(200, 150, seed=1)
    grid = CellGrid.measure(scene, np.zeros((64, 64, 3), np.uint8), (10, -20, 190, 160))  # 2.8 px cells, clipped
    covered = np.zeros((40, 50), dtype=np.uint8)
    covered[5:9, 30:31] = 3  # a sliver: a faint alpha still covers its cells
    covered[20:35, 2:20] = 255
    expected = np.zeros(grid.generated.shape[:2], dtype=bool)
    for y, x in zip(*np.nonzero(covered), strict=True):
        sx, sy = origin[0] + x + 0.5, origin[1] + y + 0.5  # the pixel's centre lies in exactly one cell
        cols = np.flatnonzero((grid.left <= sx) & (sx < grid.left + grid.step[0]))
        rows = np.flatnonzero((grid.top <= sy) & (sy < grid.top + grid.step[1]))
        expected[np.ix_(rows, cols)] = True
    got = grid.covering(Image.fromarray(covered), origin)
    assert expected.any() and np.array_equal(got, expected)


@pytest.mark.parametrize("method", MAPS)
def test_gains_are_clamped(method):
    """A near-flat context says little about contrast: whatever it suggests, the map's gain stays in [1/2, 2]."""
    rng = np.random.default_rng(0)
    flat = 128 + rng.normal(0, 0.5, (400, 3))
    for generated, scene, bound in ((flat, 128 + 100 * (flat - 128), 2.0), (128 + 100 * (flat - 128), flat, 0.5)):
        out = np.asarray(fit_color_map(method, generated, scene).apply(_ramp()), dtype=float)[0]
        slope = (out[156] - out[100]) / 56
        assert slope == pytest.approx(np.full(3, bound), rel=0.15), (generated.std(), scene.std())


def _ramp():
    levels = np.arange(256, dtype=np.uint8)
    return Image.fromarray(np.repeat(levels[None, :, None], 3, axis=2))


def _work(scene, window, region) -> Box:
    return paste_box(scene.size, window, region, dilate_px=8)


def test_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="ImageSettings.color_match = 'lab'.*none, mean_std, affine, poly2"):
        ImageSettings(color_match="lab")
    with pytest.raises(ValueError, match="unknown colour map 'poisson'"):
        fit_color_map("poisson", np.zeros((20, 3)), np.zeros((20, 3)))  # a field, not a map
    scene, region, window, generated = drifted_pair("ellipse")
    with pytest.raises(ValueError, match="unknown colour-match method 'histogram'"):
        paste_back(scene, generated, window, region, dilate_px=8, feather_px=4, color_match="histogram")
    for method in COLOR_MATCH_METHODS:
        assert ImageSettings(color_match=method).color_match == method
