"""A "poison" pair that kills the worker process computing it (segfault, out-of-memory kill) on every attempt.

Ray Data's defaults would retry its batch on a restarted actor (or its CPU task on a new worker) forever, and the run
would never end. With `compute.max_task_retries` the block is given up after that many retries, Ray Data goes on
past it (`compute.max_errored_blocks`), and the driver writes a `failed` row with reason `worker_lost` for each pair
of the block: the run finishes, every pair has exactly one row, summary.json is written. A failure that kills every
batch (systemic) stops the job instead, without summary.json.

The poison is a stage from _poison.py (beside this file) swapped into `inference.graph` in the driver; Ray ships it
to the workers by value, so no test hook lives in the pipeline's code.
"""

from __future__ import annotations

import logging
import time

import fsspec
import pytest
import ray
from ray.data import DataContext

from jobs import nightly
from pipeline.inference import graph, stages
from pipeline.synthetic.samples import write_sample_set

from . import _poison
from ._support import accounting, read_json, read_rows, write_config

pytestmark = pytest.mark.integration

RETRIES = 1  # compute.max_task_retries: 2 attempts per block keep the test short; the default is 3


@pytest.fixture
def poison(ray_local, monkeypatch):
    """Ship _poison's stages to the workers by value (they need not import the tests), and keep each inference
    actor to one batch at a time: a batch queued on the actor when it dies is failed too and loses one of its own
    retries, which would make which pairs are lost depend on timing (see the README's failures section)."""
    ray.cloudpickle.register_pickle_by_value(_poison)
    monkeypatch.setattr(DataContext.get_current(), "max_tasks_in_flight_per_actor", 1)
    # pytest keeps a test's log records, and Ray Data logs each dropped block with its exception, whose traceback
    # references the pass's actors: kept, they would hold the only GPU for the rest of the test (the next run would
    # wait for it). pytest's handlers keep the formatted traceback text, not the traceback.
    captures = [h for h in logging.getLogger("ray.data").handlers if type(h).__module__.startswith("_pytest")]
    for handler in captures:
        handler.addFilter(_without_traceback)
    yield monkeypatch
    for handler in captures:
        handler.removeFilter(_without_traceback)
    ray.cloudpickle.unregister_pickle_by_value(_poison)


def _without_traceback(record: logging.LogRecord) -> bool:
    if record.exc_info:
        record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    return True


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    # One scene's pairs make one block (BLOCK_ROWS pairs, sorted by scene): the poison's block is its scene's pairs.
    root = tmp_path_factory.mktemp("inputs")
    return write_sample_set(str(root), n_products=graph.BLOCK_ROWS, n_scenes=3, scene_size=(160, 120))


def _config(sample, out, run_id: str, **compute) -> dict:
    return {
        "run_id": run_id, "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
        "output_uri": str(out), "pairing": {"strategy": "all"},
        "model": {"source": "noop", "allow_random_weights": True},
        "sampling": {"resolution": 64}, "compute": {"batch_size": 4, "max_task_retries": RETRIES, **compute},
        "record": {"part_rows": 8},
    }


def _run_with_poison(poison, sample, tmp_path, stage: str, replacement) -> tuple[list[dict], dict, set]:
    poison.setattr(graph, stage, replacement)
    config = _config(sample, tmp_path / "out", f"poison-{stage.lower()}")
    assert nightly.main(["--config", write_config(tmp_path / "run.yaml", config)]) == 0
    fs = fsspec.filesystem("file")
    run = str(tmp_path / "out" / config["run_id"])
    rows = read_rows(fs, run)
    expected = {(p, s, "default") for p in sample.product_ids for s in sample.scene_ids}
    counted = accounting(rows, expected)
    assert counted == {"rows": len(expected), "lost": 0, "duplicated": 0, "unexpected": 0}, counted

    poisoned_scene = _poison.POISON[1]
    lost = {(r["product_id"], r["scene_id"]): r for r in rows if r["scene_id"] == poisoned_scene}
    assert len(lost) == graph.BLOCK_ROWS and _poison.POISON in lost
    assert {(r["status"], r["error_reason"]) for r in lost.values()} == {("failed", "worker_lost")}
    message = next(iter(lost.values()))["error_message"]
    assert f"died {RETRIES + 1} times (compute.max_task_retries={RETRIES})" in message, message
    assert "retry_failed: true" in message
    assert all(r["output_uri"] is None for r in lost.values())
    others = [r for r in rows if r["scene_id"] != poisoned_scene]
    assert {(r["status"], r["error_reason"]) for r in others} == {("ok", None)}

    summary = read_json(fs, f"{run}/summary.json")
    assert summary["pairs"] == summary["this_attempt"]["pairs"] == len(expected)
    assert summary["by_error_reason"] == {"worker_lost": graph.BLOCK_ROWS}
    return rows, config, expected


def _inference_actors(class_name: str) -> list[dict]:
    from ray._private import state

    job_id = ray.get_runtime_context().get_job_id()
    return [a for a in state.actors().values() if a["JobID"] == job_id and class_name in a["ActorClassName"]]


@pytest.mark.timeout(180)
def test_poison_pair_killing_the_inference_actor(poison, sample, tmp_path):
    rows, config, expected = _run_with_poison(poison, sample, tmp_path, "Inference", _poison.PoisonedInference)
    # The actor died once per attempt of the poisoned batch, and was restarted each time (max_restarts=-1).
    actors = _inference_actors("PoisonedInference")
    assert [a["NumRestarts"] for a in actors] == [RETRIES + 1], actors

    # A rerun with retry_failed (the poison gone: a fixed model, or a pair that was only unlucky) computes the lost
    # pairs again and nothing else; every pair still ends with exactly one row.
    poison.setattr(graph, "Inference", stages.Inference)
    config["retry_failed"] = True
    assert nightly.main(["--config", write_config(tmp_path / "rerun.yaml", config)]) == 0
    fs = fsspec.filesystem("file")
    run = str(tmp_path / "out" / config["run_id"])
    rerun = read_rows(fs, run)
    assert accounting(rerun, expected) == {"rows": len(expected), "lost": 0, "duplicated": 0, "unexpected": 0}
    assert {r["status"] for r in rerun} == {"ok"}
    assert read_json(fs, f"{run}/summary.json")["this_attempt"]["pairs"] == graph.BLOCK_ROWS


@pytest.mark.timeout(180)
def test_poison_pair_killing_a_cpu_task(poison, sample, tmp_path):
    """The CPU map tasks are bounded the same way (Ray Data's default task max_retries is -1, forever too)."""
    _run_with_poison(poison, sample, tmp_path, "prepare_row", _poison.poisoned_preprocess)


@pytest.mark.timeout(180)
def test_every_batch_killing_its_actor_stops_the_job(poison, sample, tmp_path, capsys):
    """A systemic failure ends too: the second lost block is one more than max_errored_blocks=1 allows."""
    poison.setattr(graph, "Inference", _poison.DyingInference)
    config = _config(sample, tmp_path / "out", "systemic", max_task_retries=0, max_errored_blocks=1)
    assert nightly.main(["--config", write_config(tmp_path / "run.yaml", config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run systemic stopped: more than 1 blocks of pairs got no result"), err
    assert "ActorUnavailableError" in err or "ActorDiedError" in err, err
    run = tmp_path / "out" / "systemic"
    assert (run / "config.json").exists() and not (run / "summary.json").exists()
    assert not read_rows(fsspec.filesystem("file"), str(run))  # nothing was computed: a rerun computes everything
    # The stopped pass's actor lets its GPU go (the next job on the cluster, here the next test, needs it).
    deadline = time.monotonic() + 30
    while ray.available_resources().get("GPU", 0) < 1:
        assert time.monotonic() < deadline, "the stopped run's inference actor still holds the GPU"
        time.sleep(0.5)
