"""The evaluation of a finished demo A/B run end to end on a local Ray: metrics per pair and variant, the set
metrics with their n, the paired table; a missing image counted, an unfinished run refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.evaluate import main as evaluate_main
from pipeline.core.errors import JobError
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.embeddings import gpus_per_actor
from pipeline.evaluate.evaluation import evaluate_run
from pipeline.evaluate.run_folder import RunNotFinished, open_run
from tests.evaluate._runs import MISSING

pytestmark = pytest.mark.integration


def _config(folder) -> EvalConfig:
    return EvalConfig.model_validate({"run_folder": str(folder), "encoders": {"clip": "tiny", "dinov2": "tiny"}})


def test_a_demo_ab_run_is_evaluated_with_a_missing_image_counted(evaluated_run):
    folder = evaluated_run.folder
    metrics = pq.read_table(folder / "eval" / "metrics.parquet")
    assert metrics.num_rows == 12
    rows = {(r["product_id"], r["scene_id"], r["variant"]): r for r in metrics.to_pylist()}
    assert {r["eval_status"] for k, r in rows.items() if k[1] == "room-empty"} == {"skipped"}
    lost = rows[MISSING]
    assert (lost["eval_status"], lost["eval_error_reason"]) == ("failed", "fetch_missing")
    assert "room-001.png" in lost["eval_error_message"] and lost["clip_i"] is None
    scored = [r for r in rows.values() if r["eval_status"] == "ok"]
    assert len(scored) == 7 and all(-100 <= r["clip_i"] <= 100 and -100 <= r["dino_i"] <= 100 for r in scored)
    assert all(r["image_key"] == f"images/{r['variant']}/{r['product_id']}/{r['scene_id']}.png" for r in scored)

    summary = json.loads((folder / "eval" / "summary.json").read_text())
    assert summary["by_eval_status"] == {"ok": 7, "failed": 1, "skipped": 4}
    assert summary["missing_images"] == 1 and summary["by_eval_error_reason"] == {"fetch_missing": 1}
    assert summary["real_set"]["images"] == 2 and summary["real_set"]["usable"] == 2  # room-000, room-001 regions
    assert "random weights" in summary["encoders"]["clip"]
    for variant, n in (("a", 4), ("b", 3)):
        entry = summary["variants"][variant]
        assert entry["evaluated"] == n and entry["clip_i"]["n"] == n
        means = [r["clip_i"] for r in scored if r["variant"] == variant]
        assert entry["clip_i"]["mean"] == pytest.approx(np.mean(means))
        fd = entry["fd_dinov2"]
        assert (fd["n_generated"], fd["n_real"], fd["biased"]) == (n, 2, True) and fd["value"] >= 0
        assert "2048" in fd["note"]
        fid = entry["fid"]  # FID on the FID Inception's features, against the same real set, reported the same way
        assert (fid["n_generated"], fid["n_real"], fid["biased"]) == (n, 2, True) and fid["value"] >= 0
        assert "2048" in fid["note"] and "fid" not in summary
        assert fid["resize"] == "pytorch_fid" and "resize" not in entry["fd_dinov2"]  # the convention it follows
        assert entry["kid_dinov2"]["n_generated"] == n and entry["kid_dinov2"]["value"] is not None

    ab = {d["metric"]: d for d in summary["ab"]["differences"]}
    assert set(ab) == {"clip_i", "dino_i"} and summary["ab"]["baseline"] == "a"
    both = [(p, s) for (p, s, v) in rows if v == "a" and rows[(p, s, "a")]["eval_status"] == "ok"
            and rows[(p, s, "b")]["eval_status"] == "ok"]
    assert ab["clip_i"]["n"] == len(both) == 3
    expected = np.mean([rows[(p, s, "b")]["clip_i"] - rows[(p, s, "a")]["clip_i"] for p, s in both])
    assert ab["clip_i"]["mean_difference"] == pytest.approx(expected)
    assert ab["clip_i"]["ci_low"] <= expected <= ab["clip_i"]["ci_high"] and 0 < ab["clip_i"]["p_value"] <= 1
    # The job printed the per-variant figures and the paired table, and wrote the page after the metrics.
    assert "paired differences vs a" in evaluated_run.printed and "biased" in evaluated_run.printed
    assert f"fid {summary['variants']['b']['fid']['value']:.4g} (n=3 vs 2, biased, pytorch_fid resize)" in (
        evaluated_run.printed)
    assert f"{expected:+.3f}" in evaluated_run.printed
    assert (folder / "report" / "index.html").is_file()


def test_a_run_without_summary_is_refused(ab_run, tmp_path, capsys):
    folder = tmp_path / "unfinished"
    shutil.copytree(ab_run, folder, ignore=shutil.ignore_patterns("images", "eval", "report"))
    (folder / "summary.json").unlink()
    with pytest.raises(RunNotFinished, match="has not finished: it has no summary.json"):
        evaluate_run(_config(folder))
    with pytest.raises(RunNotFinished):
        open_run(str(folder))
    assert evaluate_main(["--set", f"run_folder={folder}", "--set", "encoders.clip=tiny"]) == 2
    assert "has not finished" in capsys.readouterr().err
    assert not (folder / "eval").exists()
    with pytest.raises(JobError, match="not a run folder"):
        open_run(str(tmp_path / "nothing-here"))


def test_encoder_actors_take_a_gpu_only_where_the_cluster_has_one(ray_local):
    cfg = _config("runs/x")
    assert ray_local.cluster_resources().get("GPU") == 1 and gpus_per_actor(cfg) == 1.0
    forced = cfg.model_copy(update={"compute": cfg.compute.model_copy(update={"gpus_per_actor": 0.0})})
    assert gpus_per_actor(forced) == 0.0
