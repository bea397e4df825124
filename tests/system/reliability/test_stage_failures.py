"""The failures the corpus cannot provoke from inputs (model, storage writes, bugs), each at the stage that meets
it, without Ray: the pair ends `failed` with its stable reason and an actionable message, its batch-mates are
unaffected, and the stage returns normally (a raised exception would fail the Ray task and the job)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.inference import stages
from pipeline.inference.config import RunConfig
from pipeline.inference.manifests import load_manifests
from pipeline.inference.pairing import make_pairs
from pipeline.synthetic.samples import write_sample_set


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    sample = write_sample_set(str(root / "in"), n_products=2, n_scenes=2, scene_size=(160, 120))
    cfg = RunConfig(run_id="stages", catalogue_uri=sample.catalogue_uri, scenes_uri=sample.scenes_uri,
                    output_uri=str(root / "out"), pairing={"strategy": "all"}, model={"source": "noop"},
                    sampling={"resolution": 64})
    pairs = make_pairs(load_manifests(cfg.catalogue_uri, cfg.scenes_uri, None), cfg.pairing, 0).to_pylist()
    return cfg, pairs


def _batch(rows: list[dict]) -> dict[str, np.ndarray]:
    batch = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        batch[key] = np.stack(values) if isinstance(values[0], np.ndarray) else np.array(values, dtype=object)
    batch["seed"] = batch["seed"].astype(np.int64)
    return batch


def _unbatch(batch: dict[str, np.ndarray]) -> list[dict]:
    return [{k: v[i] for k, v in batch.items()} for i in range(len(batch["seed"]))]


class _FailsOn:
    """A sampler that fails whenever the batch holds a given seed (a pair that breaks the model)."""

    def __init__(self, bad_seed: int | None) -> None:
        self.bad_seed = bad_seed

    def generate(self, batch):
        if self.bad_seed is None or self.bad_seed in batch.seeds:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return batch.scene.copy()


def test_model_failure_isolates_the_pair(setup):
    cfg, pairs = setup
    rows = [stages.prepare_row(dict(p), cfg) for p in pairs]
    inference = stages.Inference(cfg)
    inference.sampler = _FailsOn(int(rows[1]["seed"]))
    out = [stages.composite_row(r, cfg) for r in _unbatch(inference(_batch(rows)))]
    assert [(r["status"], r["error_reason"]) for r in out] == [
        ("ok", None), ("failed", "model_error"), ("ok", None), ("ok", None)]
    assert "generation failed: RuntimeError: CUDA error" in out[1]["error_message"]

    inference.sampler = _FailsOn(None)  # a model that fails on everything: every pair answered, none lost
    out = [stages.composite_row(r, cfg) for r in _unbatch(inference(_batch(rows)))]
    assert {(r["status"], r["error_reason"]) for r in out} == {("failed", "model_error")} and len(out) == 4


def test_wrong_model_output_is_model_error(setup):
    cfg, pairs = setup
    row = stages.prepare_row(dict(pairs[0]), cfg)
    row.update(generated=np.zeros((64, 64), np.float32), model_id="noop", inference_s=0.0)
    out = stages.composite_row(row, cfg)
    assert (out["status"], out["error_reason"]) == ("failed", "model_error")
    assert "uint8 array (h, w, 3)" in out["error_message"]


def test_storage_write_failure_is_write_error(setup, monkeypatch):
    cfg, pairs = setup
    row = stages.prepare_row(dict(pairs[0]), cfg)
    row.update(generated=row["scene_crop"], model_id="noop", inference_s=0.0)

    def denied(uri, data, s3=None):
        raise PermissionError(13, "Access Denied")

    monkeypatch.setattr(stages, "write_bytes", denied)
    out = stages.composite_row(row, cfg)
    assert (out["status"], out["error_reason"], out["output_uri"]) == ("failed", "write_error", None)
    assert out["error_message"].startswith(f"could not write {cfg.run_uri}/images/default/")
    assert "Access Denied" in out["error_message"]


def test_unexpected_bug_is_internal_error(setup, monkeypatch, caplog):
    cfg, pairs = setup

    def bug(*args, **kwargs):
        raise KeyError("a bug in the pipeline")

    monkeypatch.setattr(stages, "parse_box", bug)
    row = stages.prepare_row(dict(pairs[0]), cfg)
    assert (row["status"], row["error_reason"]) == ("failed", "internal_error")
    assert row["error_message"] == "preprocess: KeyError: 'a bug in the pipeline'"
    assert "Traceback" in caplog.text  # the worker's log keeps the traceback for whoever fixes it
