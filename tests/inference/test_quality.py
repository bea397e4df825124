"""Each pair's paste-back measured in its row, the quality flags, the retries that act on them, and the summary's
counts; the stages are called in process (no Ray) on the demo's kind of sample set."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core.model_families import DTC_DEFAULTS
from pipeline.imaging.seams import SeamMetrics
from pipeline.inference import record
from pipeline.inference.config import QualityConfig, RunConfig, load_config
from pipeline.inference.manifests import load_manifests
from pipeline.inference.metadata_row import ROW_SCHEMA
from pipeline.inference.pairing import make_pairs
from pipeline.inference.quality import attempt_seed, crop_metrics, quality_flags, rank
from pipeline.inference.stages import Inference, composite_row, prepare_row
from pipeline.synthetic.samples import write_sample_set


def test_flags_follow_the_thresholds():
    quality = QualityConfig(seam_delta_e_max=5.0, region_delta_e_min=2.0)
    assert quality_flags(SeamMetrics(1.0, 20.0, 0), quality) == []
    assert quality_flags(SeamMetrics(7.0, 1.0, 3), quality) == ["seam", "nothing_inserted", "outside_changed"]
    assert quality_flags(SeamMetrics.nothing_pasted(), quality) == []  # nothing measured: nothing failed
    assert rank(SeamMetrics(3.0, 20.0, 0), quality) < rank(SeamMetrics(1.0, 1.0, 0), quality)  # fewer flags first
    assert rank(SeamMetrics(1.0, 20.0, 0), quality) < rank(SeamMetrics(3.0, 20.0, 0), quality)
    assert attempt_seed(7, 1) == 7 and attempt_seed(7, 2) == attempt_seed(7, 2) != attempt_seed(7, 3)


@pytest.mark.parametrize("value", ["-1", "abc"])
def test_bad_quality_settings_stop_the_job(value):
    from pipeline.core.settings import ConfigError

    with pytest.raises(ConfigError, match="quality.retries"):
        load_config(None, ["run_id=r", "catalogue_uri=c", "scenes_uri=s", "output_uri=o", f"quality.retries={value}"])
    with pytest.raises(ConfigError, match="image.color_match"):
        load_config(None, ["run_id=r", "catalogue_uri=c", "scenes_uri=s", "output_uri=o", "image.color_match=magic"])


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("quality")
    sample = write_sample_set(str(root / "inputs"), n_products=2, n_scenes=2, scene_size=(160, 120))
    manifests = load_manifests(sample.catalogue_uri, sample.scenes_uri, None)
    cfg = load_config(None, ["run_id=q", f"catalogue_uri={sample.catalogue_uri}", f"scenes_uri={sample.scenes_uri}",
                             f"output_uri={root / 'runs'}"])
    return make_pairs(manifests, cfg.pairing, 0).to_pylist()


def _run_pairs(cfg: RunConfig, pairs: list[dict], crops: list | None = None) -> list[dict]:
    """prepare -> inference -> composite, as the Ray Data stages do, on one batch; `crops` gets each pair's kept
    crop measured as the actor ranks attempts."""
    prepared = [prepare_row(dict(pair), cfg) for pair in pairs]
    batch = {name: np.stack([row[name] for row in prepared]) if isinstance(prepared[0][name], np.ndarray)
             else np.array([row[name] for row in prepared], dtype=object) for name in prepared[0]}
    inputs = {name: value.copy() for name, value in batch.items()}
    out = Inference(cfg)(batch)
    for i in range(len(pairs)) if crops is not None else ():
        side = int(inputs["window"][i][2] - inputs["window"][i][0])
        crops.append(crop_metrics(inputs["scene_crop"][i], inputs["mask_crop"][i], out["generated"][i], side,
                                  cfg.image_settings))
    rows = [{name: out[name][i] for name in out} for i in range(len(pairs))]
    return [composite_row(row, cfg) for row in rows]


def _cfg(tmp_path, **quality) -> RunConfig:
    cfg = load_config(None, ["run_id=q", "catalogue_uri=c", "scenes_uri=s", f"output_uri={tmp_path}",
                             "model.source=tiny", "sampling.resolution=64", "sampling.steps=2", "output.format=png"])
    cfg = cfg.with_model_defaults({"default": DTC_DEFAULTS})
    return cfg.model_copy(update={"quality": QualityConfig(**quality)})


def test_rows_carry_the_measures_and_flags(pairs, tmp_path):
    rows = _run_pairs(_cfg(tmp_path, seam_delta_e_max=0.001, region_delta_e_min=0.0), pairs)
    for row in rows:
        assert row["status"] == "ok" and row["attempts"] == 1
        assert row["seam_delta_e"] > 0.001 and row["region_delta_e"] > 0 and row["outside_changed_px"] == 0
        assert row["quality_flags"] == ["seam"]
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    tally = record.RowTally()
    tally.add(table)
    quality = tally.quality_by_variant()["default"]
    assert quality["flagged_pairs"] == len(rows) and quality["by_flag"] == {"seam": len(rows)}
    assert quality["seam_delta_e"]["pairs"] == len(rows)
    seams = sorted(r["seam_delta_e"] for r in rows)
    assert math.isclose(quality["seam_delta_e"]["max"], round(seams[-1], 3), abs_tol=1e-3)
    assert math.isclose(quality["seam_delta_e"]["mean"], round(float(np.mean(np.float32(seams))), 3), abs_tol=1e-3)


def test_retries_sample_a_flagged_pair_again_and_keep_the_best(pairs, tmp_path):
    first_crops: list = []
    once = _run_pairs(_cfg(tmp_path / "a", seam_delta_e_max=0.001), pairs, first_crops)
    # Every pair is flagged whatever it draws: each gets its two retries, and keeps its best attempt.
    kept_crops: list = []
    retried = _run_pairs(_cfg(tmp_path / "b", seam_delta_e_max=0.001, retries=2), pairs, kept_crops)
    for first, best in zip(once, retried, strict=True):
        assert best["attempts"] == 3 and first["attempts"] == 1
    seams = [(a.seam_delta_e, b.seam_delta_e) for a, b in zip(first_crops, kept_crops, strict=True)]
    assert all(kept <= first for first, kept in seams) and any(kept < first for first, kept in seams)
    # Pairs no check flags are never sampled again.
    unflagged = _run_pairs(_cfg(tmp_path / "c", seam_delta_e_max=1000.0, retries=2), pairs)
    assert [r["attempts"] for r in unflagged] == [1] * len(pairs)
    assert [r["seam_delta_e"] for r in unflagged] == [r["seam_delta_e"] for r in once]
