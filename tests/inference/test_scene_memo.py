"""The preprocess stage's last-scene memo: a hit gives exactly what a fresh preparation gives, and only a hit skips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import MASK_EMPTY, PairError
from pipeline.imaging.settings import ImageSettings
from pipeline.inference import preprocess
from pipeline.inference.preprocess import prepare_pair
from pipeline.synthetic.images import encode, exif_with_orientation, photo

SETTINGS = ImageSettings(resolution=64, reference_size=32)
BOX = (40, 30, 120, 100)


def fields(pair) -> dict:
    return {f.name: getattr(pair, f.name) for f in dataclasses.fields(pair)}


def assert_same(a, b) -> None:
    for name, value in fields(a).items():
        other = getattr(b, name)
        assert np.array_equal(value, other) if isinstance(value, np.ndarray) else value == other, name


def fresh(scene, product, **kwargs):
    preprocess.PREPARE_SCENES.clear()
    return prepare_pair(scene, product, **kwargs)


@pytest.fixture
def scene() -> bytes:
    return encode(photo(260, 180, seed=1), "JPEG", quality=95, exif=exif_with_orientation(6))


@pytest.fixture
def products() -> list[bytes]:
    return [encode(photo(90 + 10 * s, 60, seed=s), "JPEG", quality=90) for s in (2, 3, 4)]


def test_pairs_of_one_scene_prepare_it_once_and_equal_fresh_preparations(scene, products):
    mask = np.zeros((260, 180), np.uint8)  # upright size is 180x260 (orientation 6)
    mask[50:150, 40:120] = 255
    mask_png = encode(Image.fromarray(mask), "PNG")
    for region in ({"mask_bytes": None, "box": BOX}, {"mask_bytes": mask_png, "box": None}):
        expected = [fresh(scene, p, settings=SETTINGS, **region) for p in products]
        preprocess.PREPARE_SCENES.clear()
        preprocess.PREPARE_SCENES.hits = preprocess.PREPARE_SCENES.misses = 0
        got = [prepare_pair(scene, p, settings=SETTINGS, **region) for p in products]
        for a, b in zip(got, expected, strict=True):
            assert_same(a, b)
        assert (preprocess.PREPARE_SCENES.misses, preprocess.PREPARE_SCENES.hits) == (1, 2)
        assert not np.array_equal(got[0].hint, got[1].hint)  # the product part is each pair's own


def test_any_difference_in_scene_region_or_settings_is_a_miss(scene, products):
    other_scene = encode(photo(260, 180, seed=5), "JPEG", quality=95)
    calls = [
        (scene, {"box": BOX}, SETTINGS),
        (other_scene, {"box": BOX}, SETTINGS),
        (scene, {"box": BOX}, SETTINGS),
        (scene, {"box": (41, 30, 120, 100)}, SETTINGS),
        (scene, {"box": (41, 30, 120, 100)}, dataclasses.replace(SETTINGS, context_margin=0.5)),
    ]
    calls.append(calls[-1])  # the same again: the only hit
    expected = [fresh(data, products[0], mask_bytes=None, settings=st, **region) for data, region, st in calls]
    preprocess.PREPARE_SCENES.clear()
    preprocess.PREPARE_SCENES.hits = preprocess.PREPARE_SCENES.misses = 0
    for (data, region, settings), want in zip(calls, expected, strict=True):
        assert_same(prepare_pair(data, products[0], mask_bytes=None, settings=settings, **region), want)
    assert (preprocess.PREPARE_SCENES.misses, preprocess.PREPARE_SCENES.hits) == (5, 1)


def test_callers_get_their_own_arrays(scene, products):
    first = prepare_pair(scene, products[0], mask_bytes=None, box=BOX, settings=SETTINGS)
    expected = first.scene_crop.copy()
    first.scene_crop[:] = 0
    first.mask_crop[:] = False
    second = prepare_pair(scene, products[1], mask_bytes=None, box=BOX, settings=SETTINGS)
    assert preprocess.PREPARE_SCENES.hits == 1
    assert np.array_equal(second.scene_crop, expected) and second.mask_crop.any()


def test_failures_are_not_remembered(scene, products):
    empty = encode(Image.new("L", (180, 260), 0), "PNG")
    preprocess.PREPARE_SCENES.hits = preprocess.PREPARE_SCENES.misses = 0
    for product in products[:2]:
        with pytest.raises(PairError) as excinfo:
            prepare_pair(scene, product, mask_bytes=empty, box=None, settings=SETTINGS)
        assert excinfo.value.reason == MASK_EMPTY
    assert (preprocess.PREPARE_SCENES.misses, preprocess.PREPARE_SCENES.hits) == (2, 0)
