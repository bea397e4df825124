"""The training manifest, the sample schedule and the pairs (no Ray: the batch function is called directly)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.core.errors import DECODE_ERROR, FETCH_MISSING
from pipeline.imaging.settings import ImageSettings
from pipeline.inference.manifests import ManifestError
from pipeline.inference.preprocess import prepare_pair
from pipeline.synthetic.images import encode
from pipeline.train.config import TrainDataConfig
from pipeline.train.data import SKIP_REASONS, Schedule, load_train_manifest, prepare_batch
from pipeline.train.pairs import make_pair, pair_rng
from tests.train._helpers import object_photo, write_manifest


def _batch(manifest, *, rows: int, ids, world: int = 1, rank: int = 0, batch_size: int = 2, **data):
    import ray

    schedule = Schedule(rows=rows, seed=0, batch_size=batch_size, world_size=world)
    ref = ray.put(manifest.train)
    return prepare_batch({"id": np.asarray(ids)}, manifest=[ref], schedule=schedule, rank=rank, first_local=0,
                         cfg=TrainDataConfig(resolution=64, **data), s3=None, dropout=0.5)


def test_manifest_problems_are_reported_together(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"mask_uri": [None, None], "split": ["train", "test"]}), path)
    with pytest.raises(ManifestError) as err:
        load_train_manifest(str(path))
    assert "required column 'image_uri' is missing" in str(err.value)

    path = tmp_path / "regions.parquet"
    pq.write_table(pa.table({"image_uri": ["a.png", "b.png"], "x0": [1, None], "y0": [1, 2], "x1": [5, 6],
                             "y1": [5, 6], "split": ["train", "test"]}), path)
    with pytest.raises(ManifestError) as err:
        load_train_manifest(str(path))
    message = str(err.value)
    assert "neither mask_uri nor a full x0,y0,x1,y1 box" in message and "row 1" in message
    assert "'split' must be train, val or null" in message and "test" in message


def test_empty_and_val_only_manifests_are_refused(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"image_uri": pa.array([], pa.string()), "mask_uri": pa.array([], pa.string())}), empty)
    with pytest.raises(ManifestError, match="is empty"):
        load_train_manifest(str(empty))
    val_only = tmp_path / "val.parquet"
    pq.write_table(pa.table({"image_uri": ["a.png"], "mask_uri": ["m.png"], "split": ["val"]}), val_only)
    with pytest.raises(ManifestError, match="no train rows"):
        load_train_manifest(str(val_only))
    with pytest.raises(ManifestError, match="does not exist"):
        load_train_manifest(str(tmp_path / "missing.parquet"))


def test_unreadable_rows_are_skipped_and_counted(tmp_path, ray_local):
    manifest = load_train_manifest(str(write_manifest(tmp_path, 2, broken=1)))
    table = manifest.train.to_pylist()
    table.append({**table[0], "image_uri": str(tmp_path / "gone.png")})
    manifest = type(manifest)(train=pa.Table.from_pylist(table, schema=manifest.train.schema), val=manifest.val)
    # Epoch 0 of 4 rows with batch 4: every row once, in the schedule's order.
    out = _batch(manifest, rows=4, ids=[0, 1, 2, 3], batch_size=4)
    reasons = sorted(SKIP_REASONS[r] for r in out["reason"] if r)
    assert reasons == sorted([DECODE_ERROR, FETCH_MISSING])
    assert out["ok"].sum() == 2 and not out["scene"][~out["ok"]].any()
    assert out["scene"].shape == (4, 64, 64, 3) and out["mask"][out["ok"]].any()


def test_the_samples_of_a_step_do_not_depend_on_the_number_of_workers():
    one = Schedule(rows=5, seed=3, batch_size=4, world_size=1)
    two = Schedule(rows=5, seed=3, batch_size=2, world_size=2)
    for micro_batch in range(4):
        local_one = np.arange(micro_batch * 4, micro_batch * 4 + 4)
        local_two = np.arange(micro_batch * 2, micro_batch * 2 + 2)
        ours = np.concatenate([two.sample_of(0, local_two), two.sample_of(1, local_two)])
        assert sorted(ours.tolist()) == one.sample_of(0, local_one).tolist()
    epochs, rows = one.epoch_row(np.arange(10))
    assert epochs.tolist() == [0] * 5 + [1] * 5
    assert sorted(rows[:5].tolist()) == sorted(rows[5:].tolist()) == list(range(5))  # each row once per epoch


def test_augmentation_is_a_function_of_seed_epoch_and_row():
    data, box = object_photo(7)
    cfg = TrainDataConfig(resolution=64)

    def pair(epoch: int):
        return make_pair(data, mask_bytes=None, box=box, reference_bytes=None, rng=pair_rng(0, epoch, 7), cfg=cfg)

    a, b, c = pair(0), pair(0), pair(1)
    for name in ("scene", "mask", "hint", "reference"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not all(np.array_equal(getattr(a, n), getattr(c, n)) for n in ("mask", "reference"))
    assert a.mask.shape == (64, 64) and a.mask.any() and a.reference.shape == (224, 224, 3)


def test_a_pair_is_built_exactly_as_inference_builds_it():
    """With the augmentations off and a reference photo, training's inputs are prepare_pair's, pixel for pixel."""
    scene, box = object_photo(11, size=(300, 200))
    product, _ = object_photo(12, size=(90, 140))
    mask = np.zeros((200, 300), np.uint8)
    mask[box[1] : box[3], box[0] + 5 : box[2]] = 255
    mask_png = encode(Image.fromarray(mask), "PNG")
    cfg = TrainDataConfig(resolution=128, mask_grow=0.0, irregular_mask_p=0.0)
    ours = make_pair(scene, mask_bytes=mask_png, box=None, reference_bytes=product, rng=pair_rng(0, 0, 0),
                     cfg=cfg)
    theirs = prepare_pair(scene, product, mask_bytes=mask_png, box=None,
                          settings=ImageSettings(resolution=128, output_format="png"))
    assert np.array_equal(ours.scene, theirs.scene_crop)
    assert np.array_equal(ours.mask, theirs.mask_crop)
    assert np.array_equal(ours.hint, theirs.hint)
    assert np.array_equal(ours.reference, theirs.reference)
