"""Procedural pairs: deterministic, ground truth equal to the room outside the region, the product where the collage
puts it, held-out seeds apart from training seeds."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.imaging.collage import hint_rectangle
from pipeline.synthetic.procedural import HELD_OUT_SEED, held_out_seeds, make_pair, write_training_set
from pipeline.synthetic.samples import PRODUCT_KINDS, draw_product_layers


def test_a_pair_is_a_function_of_its_seed():
    a, b, c = make_pair(7), make_pair(7), make_pair(8)
    assert np.array_equal(np.asarray(a.target), np.asarray(b.target))
    assert np.array_equal(np.asarray(a.product), np.asarray(b.product))
    assert not np.array_equal(np.asarray(a.target), np.asarray(c.target))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_the_target_is_the_room_outside_the_region_and_the_product_inside(seed):
    pair = make_pair(seed)
    room, target, region = np.asarray(pair.room), np.asarray(pair.target), pair.region
    assert np.array_equal(room[~region], target[~region])
    assert pair.placement == hint_rectangle(region, pair.product.size)
    x0, y0, x1, y1 = pair.placement
    changed = np.abs(room.astype(int) - target.astype(int)).sum(axis=-1) > 30
    assert changed[y0:y1, x0:x1].mean() > 0.1  # the product is drawn in its rectangle
    assert changed[region].sum() > 0.9 * changed.sum()


def test_every_kind_draws_an_object_on_white():
    import random

    for kind in PRODUCT_KINDS:
        rgb, alpha = draw_product_layers(kind, random.Random(0), (200, 240))
        a = np.asarray(alpha) > 0
        assert 0.05 < a.mean() < 0.9, kind
        assert (np.asarray(rgb)[~a] == 255).all(), kind


def test_the_training_manifest_keeps_held_out_seeds_apart(tmp_path):
    uri = write_training_set(str(tmp_path), n_train=3, n_val=2, size=(160, 120))
    rows = pq.read_table(uri).to_pylist()
    assert [r["split"] for r in rows] == ["train"] * 3 + ["val"] * 2
    assert [r["seed"] for r in rows] == [0, 1, 2, *held_out_seeds(2)]
    assert all(r["seed"] < HELD_OUT_SEED for r in rows[:3])
    for r in rows:
        assert (r["mask_uri"] is None) == (r["x0"] is not None)
        assert Image.open(r["image_uri"]).size == (160, 120)
        assert Image.open(r["reference_uri"]).mode == "RGB"
    with pytest.raises(ValueError, match="below"):
        write_training_set(str(tmp_path / "x"), n_train=2, first_seed=HELD_OUT_SEED - 1)
