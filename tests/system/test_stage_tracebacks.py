"""An unexpected exception inside a CPU stage becomes that pair's `internal_error` row, and its whole traceback reaches
the job's log: the driver's output, where Ray streams what its workers write (as `ray job submit` shows it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipeline.synthetic.samples import write_sample_set

REPO = Path(__file__).resolve().parents[2]

# The driver, in its own process connected to the running cluster with Ray's defaults (log_to_driver on). Its
# stage wrappers are defined in __main__, so Ray ships them to the workers by value; they inject a bug for one
# product only and put the patched function back before returning (workers are reused by later tests).
DRIVER = textwrap.dedent("""
    import logging, sys
    import ray
    from pipeline.inference import graph, preprocess, runner, stages
    from pipeline.inference.config import RunConfig

    def bug_in_reference(*args, **kwargs):
        raise ZeroDivisionError("injected: a bug deep in prepare_pair")

    def bug_in_stage(raw):
        raise KeyError("injected: a bug in the stage itself")

    BUGS = {sys.argv[4]: (preprocess, "make_reference", bug_in_reference),
            sys.argv[5]: (stages, "parse_box", bug_in_stage)}

    def prepare_row(row, cfg):
        target, name, bug = BUGS.get(row["product_id"], (None, "", None))
        if target is None:
            return stages.prepare_row(row, cfg)
        saved = getattr(target, name)
        setattr(target, name, bug)
        try:
            return stages.prepare_row(row, cfg)
        finally:
            setattr(target, name, saved)

    logging.basicConfig(level=logging.INFO)
    graph.prepare_row = prepare_row
    ray.init()
    cfg = RunConfig(run_id="tracebacks", catalogue_uri=sys.argv[1], scenes_uri=sys.argv[2], output_uri=sys.argv[3],
                    pairing={"strategy": "all"}, model={"source": "noop"}, sampling={"resolution": 64},
                    progress_interval_s=1)
    print("summary:", runner.run(cfg).summary["by_error_reason"], flush=True)
""")


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_cpu_stage_bug_is_a_row_and_its_traceback_reaches_the_driver(ray_local, tmp_path):
    sample = write_sample_set(str(tmp_path / "in"), n_products=3, n_scenes=1, scene_size=(160, 120))
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO),
           "RAY_DEDUP_LOGS": "1"}
    deep, shallow, fine = sample.product_ids
    args = [sample.catalogue_uri, sample.scenes_uri, str(out), deep, shallow]
    done = subprocess.run([sys.executable, "-c", DRIVER, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "summary: {'internal_error': 2}" in output, output[-4000:]

    rows = {r["product_id"]: r for r in ds.dataset(str(out / "tracebacks" / "metadata")).to_table().to_pylist()}
    assert (rows[deep]["status"], rows[deep]["error_reason"]) == ("failed", "internal_error")
    assert rows[deep]["error_message"] == (
        "preparing the pair failed unexpectedly: ZeroDivisionError: injected: a bug deep in prepare_pair")
    assert rows[shallow]["error_message"] == "preprocess: KeyError: 'injected: a bug in the stage itself'"
    assert (rows[fine]["status"], rows[fine]["error_reason"]) == ("ok", None)

    # Each traceback, whole: the frames down to the raise and the exception, in the driver's output. (Ray folds a line
    # that several workers print alike into one, so lines common to both tracebacks are not counted.)
    assert "Traceback (most recent call last):" in output, output[-6000:]
    assert "The above exception was the direct cause of the following exception:" in output, output[-6000:]
    assert 'in bug_in_reference\n' in output and "ZeroDivisionError: injected: a bug deep in prepare_pair" in output
    assert "in _prepare\n" in output  # the frame inside pipeline/inference/preprocess.py that called the bug
    assert 'in bug_in_stage\n' in output and "KeyError: 'injected: a bug in the stage itself'" in output


def test_wrapped_bug_keeps_its_cause_in_the_log(tmp_path, monkeypatch, caplog):
    """Without Ray: `prepare_pair` turns the bug into a PairError; the stage still logs the traceback of the cause."""
    from pipeline.inference import preprocess, stages
    from pipeline.inference.config import RunConfig
    from pipeline.inference.manifests import load_manifests
    from pipeline.inference.pairing import make_pairs

    sample = write_sample_set(str(tmp_path / "in"), n_products=1, n_scenes=1, scene_size=(160, 120))
    cfg = RunConfig(run_id="unit", catalogue_uri=sample.catalogue_uri, scenes_uri=sample.scenes_uri,
                    output_uri=str(tmp_path / "out"), pairing={"strategy": "all"}, model={"source": "noop"},
                    sampling={"resolution": 64})
    pair = make_pairs(load_manifests(cfg.catalogue_uri, cfg.scenes_uri, None), cfg.pairing, 0).to_pylist()[0]

    def broken_reference(*args, **kwargs):
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(preprocess, "make_reference", broken_reference)
    row = stages.prepare_row(dict(pair), cfg)
    assert (row["status"], row["error_reason"]) == ("failed", "internal_error")
    assert row["error_message"] == "preparing the pair failed unexpectedly: ZeroDivisionError: injected"
    assert "in broken_reference" in caplog.text and "ZeroDivisionError: injected" in caplog.text
    assert "The above exception was the direct cause" in caplog.text
