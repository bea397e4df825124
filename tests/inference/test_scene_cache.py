"""The postprocess stage's last-scene cache: same output bytes with and without it, and the scene left intact."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import PairError
from pipeline.core.last_entry import LastEntry
from pipeline.imaging.decode import decode_image
from pipeline.imaging.settings import ImageSettings
from pipeline.inference import postprocess
from pipeline.inference.postprocess import composite_pair
from pipeline.inference.preprocess import prepare_pair
from pipeline.synthetic.images import encode, exif_with_orientation, noise, photo

RES = 64


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    cache = LastEntry()
    monkeypatch.setattr(postprocess, "COMPOSITE_SCENES", cache)
    return cache


def generated(seed: int) -> np.ndarray:
    return noise(RES, RES, seed=seed)


def uncached(scene: bytes, crop: np.ndarray, window, box, settings) -> bytes:
    postprocess.COMPOSITE_SCENES.clear()
    out, _, _ = composite_pair(scene, crop, window, box=box, settings=settings)
    postprocess.COMPOSITE_SCENES.clear()
    return out


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_consecutive_pairs_of_one_scene_decode_it_once_and_match_fresh_decodes(fresh_cache, fmt, orientation):
    settings = ImageSettings(resolution=RES, reference_size=32, output_format=fmt)
    scene = encode(photo(260, 180, seed=1), "JPEG", quality=95, exif=exif_with_orientation(orientation))
    products = [encode(photo(90, 60, seed=s), "JPEG", quality=90) for s in (2, 3, 4)]
    box = (40, 30, 120, 100)
    windows = [prepare_pair(scene, p, mask_bytes=None, box=box, settings=settings).window for p in products]
    expected = [uncached(scene, generated(i), w, box, settings) for i, w in enumerate(windows)]
    fresh_cache.hits = fresh_cache.misses = 0

    got = [composite_pair(scene, generated(i), w, box=box, settings=settings)[0] for i, w in enumerate(windows)]

    assert got == expected  # byte for byte: the cached pixels are the scene's, not the previous pair's composite
    assert (fresh_cache.misses, fresh_cache.hits) == (1, 2)
    with fresh_cache.borrow(scene, lambda: pytest.fail("the scene should be cached")) as pixels:
        assert np.array_equal(np.asarray(pixels), np.asarray(decode_image(scene, max_pixels=10**8)))


def test_another_scene_replaces_the_entry(fresh_cache):
    settings = ImageSettings(resolution=RES, output_format="png")
    box = (20, 20, 60, 60)
    scenes = [encode(photo(120, 90, seed=s), "JPEG", quality=90) for s in (5, 6)]
    window = prepare_pair(scenes[0], scenes[1], mask_bytes=None, box=box, settings=settings).window
    expected = [uncached(scene, generated(1), window, box, settings) for scene in scenes]
    fresh_cache.hits = fresh_cache.misses = 0

    for i in (0, 1, 0):
        assert composite_pair(scenes[i], generated(1), window, box=box, settings=settings)[0] == expected[i]
    assert (fresh_cache.misses, fresh_cache.hits) == (3, 0)


def test_a_failed_encode_drops_the_entry_and_the_next_pair_is_still_right(fresh_cache, monkeypatch):
    settings = ImageSettings(resolution=RES, output_format="png")
    box = (30, 30, 90, 70)
    scene = encode(photo(160, 120, seed=7), "JPEG", quality=90)
    window = prepare_pair(scene, scene, mask_bytes=None, box=box, settings=settings).window
    expected = uncached(scene, generated(2), window, box, settings)

    real = postprocess.encode_image
    monkeypatch.setattr(postprocess, "encode_image", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(PairError):
        composite_pair(scene, generated(1), window, box=box, settings=settings)
    monkeypatch.setattr(postprocess, "encode_image", real)

    assert composite_pair(scene, generated(2), window, box=box, settings=settings)[0] == expected
    assert fresh_cache.hits == 0  # the entry was dropped after the failure: decoded again


def test_large_scenes_are_not_kept_and_a_busy_cache_decodes_a_private_copy(monkeypatch):
    monkeypatch.setattr(postprocess, "KEPT_MAX_PIXELS", 100)
    keep = postprocess._small_enough_to_keep
    cache = LastEntry()
    image = Image.new("RGB", (20, 10))
    with cache.borrow(b"big", lambda: image, keep=keep) as pixels:
        assert pixels is image
    with cache.borrow(b"big", lambda: image.copy(), keep=keep) as pixels:
        assert pixels is not image  # not kept: decoded again
    assert cache.hits == 0 and cache.misses == 2

    cache = LastEntry()
    small = Image.new("RGB", (10, 10))
    # While one user holds the entry, another gets a private copy.
    with cache.borrow(b"a", lambda: small, keep=keep) as outer, cache.borrow(b"a", lambda: small.copy()) as inner:
        assert inner is not outer
    with cache.borrow(b"a", lambda: pytest.fail("cached"), keep=keep) as again:
        assert again is small
