"""The runner without Ray: which pairs an attempt computes (resume keys, retry_failed, ids of any characters), the
worker_lost rows of pairs a pass returned nothing for, and how `run` accounts for them in the record and summary."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest
import ray

from pipeline.core.errors import JobError, RunStopped
from pipeline.core.model_families import DTC_DEFAULTS, describe
from pipeline.core.model_sources import MODEL_NAMES
from pipeline.inference import checks, planning, record, runner
from pipeline.inference.config import RunConfig
from pipeline.inference.metadata_row import ROW_SCHEMA, metadata_row
from pipeline.inference.pairing import PAIR_SCHEMA
from pipeline.synthetic.samples import write_sample_set

# Ids that a string encoding of the pair could confuse: separators inside ids, prefixes of each other, a length
# prefix spelt out, NUL, non-ASCII, the empty string.
ODD_IDS = [("ab", "c"), ("a", "bc"), ("a:b", "c"), ("a", "b:c"), ("1:a", "2:bc"), ("x\x00y", "z"), ("x", "\x00yz"),
           ("é/ü", "%2F"), ("", "s"), ("s", "")]


def pair_table(ids: list[tuple[str, str]], variant: str = "default") -> pa.Table:
    rows = [{"product_id": p, "scene_id": s, "variant": variant, "seed": i, "product_uri": f"u/{p}", "scene_uri": "s",
             "mask_uri": None, "box": "0,0,1,1"} for i, (p, s) in enumerate(ids)]
    return pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)


def record_rows(cfg: RunConfig, pairs: pa.Table, status: str = "ok") -> None:
    built = [metadata_row(cfg.for_variant(p["variant"]), p, status=status,
                          error_reason=None if status == "ok" else "decode_error") for p in pairs.to_pylist()]
    writer = record.MetadataWriter(cfg)
    writer.add(pa.Table.from_pylist(built, schema=ROW_SCHEMA))
    writer.flush()


def pending_pairs(cfg: RunConfig, pairs: pa.Table) -> pa.Table:
    """The pairs an attempt computes, as the planning tasks choose them."""
    return record.done_key_set(cfg, retry_failed=cfg.retry_failed).without(pairs)


def without_rows(cfg: RunConfig, pairs: pa.Table) -> pa.Table:
    """The pairs with no row now, as a pass finds those Ray Data dropped."""
    return record.recorded_key_set(cfg).without(pairs)


def keys(table: pa.Table) -> list[tuple[str, str, str]]:
    return sorted(zip(*(table.column(c).to_pylist() for c in ("product_id", "scene_id", "variant")), strict=True))


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    return RunConfig(run_id="r", catalogue_uri="c", scenes_uri="s", output_uri=str(tmp_path / "out"),
                     model={"source": "noop"})


# --- resume keys -------------------------------------------------------------------------------------------------


def test_pending_pairs_are_those_without_a_row_whatever_the_ids_hold(cfg):
    pairs = pair_table(ODD_IDS)
    assert pending_pairs(cfg, pairs) is pairs  # nothing recorded yet
    done = pairs.take([0, 2, 5, 7, 8])  # ("ab","c"), ("a:b","c"), ("x\0y","z"), ("é/ü","%2F"), ("","s")
    record_rows(cfg, done)
    pending = pending_pairs(cfg, pairs)
    assert keys(pending) == keys(pairs.take([1, 3, 4, 6, 9]))
    assert pending.schema == PAIR_SCHEMA
    assert keys(pending_pairs(cfg, pending)) == keys(pending)  # none of them has a row


def test_the_variant_is_part_of_the_pair(cfg):
    a, b = pair_table([("p", "s")], "a"), pair_table([("p", "s")], "b")
    record_rows(cfg, a)
    assert keys(pending_pairs(cfg, pa.concat_tables([a, b]))) == [("p", "s", "b")]


def test_retry_failed_computes_failed_pairs_again_and_drops_their_rows(cfg):
    pairs = pair_table([("ok", "s"), ("bad", "s"), ("new", "s")])
    record_rows(cfg, pairs.take([0]))
    record_rows(cfg, pairs.take([1]), status="failed")
    assert keys(pending_pairs(cfg, pairs)) == [("new", "s", "default")]
    assert record.read_metadata(cfg).num_rows == 2  # without retry_failed nothing is dropped

    retry = cfg.model_copy(update={"retry_failed": True})
    assert keys(pending_pairs(retry, pairs)) == [("bad", "s", "default"), ("new", "s", "default")]
    assert record.read_metadata(cfg).column("product_id").to_pylist() == ["ok"]  # one row per pair after the retry


def test_pairs_without_rows_never_drops_a_row(cfg):
    pairs = pair_table([("ok", "s"), ("bad", "s"), ("lost", "s")])
    record_rows(cfg, pairs.take([0]))
    record_rows(cfg, pairs.take([1]), status="failed")
    retry = cfg.model_copy(update={"retry_failed": True})
    assert keys(without_rows(retry, pairs)) == [("lost", "s", "default")]
    assert record.read_metadata(cfg).num_rows == 2


def test_order_by_scene_puts_a_scenes_pairs_side_by_side():
    pairs = pair_table([("p2", "s2"), ("p1", "s1"), ("p3", "s2"), ("p0", "s1")])
    ordered = planning.order_by_scene(pairs)
    assert list(zip(ordered.column("scene_id").to_pylist(), ordered.column("product_id").to_pylist(),
                    strict=True)) == [("s1", "p0"), ("s1", "p1"), ("s2", "p2"), ("s2", "p3")]


# --- worker_lost rows --------------------------------------------------------------------------------------------


def test_worker_lost_rows_one_per_pair_with_the_variants_settings(tmp_path):
    cfg = RunConfig(run_id="r", catalogue_uri="c", scenes_uri="s", output_uri=str(tmp_path), model={"source": "tiny"},
                    sampling={"steps": 30}, compute={"max_task_retries": 2},
                    variants=[{"name": "a"}, {"name": "b", "model": {"source": "noop"}, "sampling": {"steps": 5}}])
    pairs = pa.concat_tables([pair_table([("p", "s"), ("q", "s")], "a"), pair_table([("p", "s")], "b")])
    lost = runner.worker_lost_rows(cfg, pairs)
    assert lost.schema == ROW_SCHEMA and lost.num_rows == 3
    rows = lost.to_pylist()
    assert [(r["product_id"], r["variant"], r["model_id"], r["steps"]) for r in rows] == [
        ("p", "a", "tiny", 30), ("q", "a", "tiny", 30), ("p", "b", "noop", 5)]
    assert {(r["status"], r["error_reason"], r["output_uri"], r["inference_node"]) for r in rows} == {
        ("failed", "worker_lost", None, None)}
    assert [r["seed"] for r in rows] == pairs.column("seed").to_pylist()
    assert [r["product_uri"] for r in rows] == ["u/p", "u/q", "u/p"]
    assert "died 3 times (compute.max_task_retries=2)" in rows[0]["error_message"]
    assert "retry_failed: true" in rows[0]["error_message"]


# --- run: lost-row accounting, without Ray -----------------------------------------------------------------------


@pytest.fixture
def run_cfg(tmp_path, ray_local) -> RunConfig:
    """A run whose passes are replaced (below): Ray plans its pairs, no stage runs."""
    sample = write_sample_set(str(tmp_path / "in"), n_products=3, n_scenes=2, scene_size=(96, 64))
    return RunConfig(run_id="acct", catalogue_uri=sample.catalogue_uri, scenes_uri=sample.scenes_uri,
                     output_uri=str(tmp_path / "out"), pairing={"strategy": "all"}, model={"source": "noop"},
                     record={"part_rows": 2})


def passes_returning(keep: int, then: BaseException | None = None):
    """A stand-in for `pass_batches`: rows of the first `keep` pairs only (Ray Data dropped the other blocks),
    then optionally the exception that ended the pass."""

    def pass_batches(cfg: RunConfig, planned: planning.PlannedPass, prompts: list[str] | None = None):
        todo = pa.concat_tables([planning.read_part(uri, cfg) for uri in planned.parts])
        for pair in todo.slice(0, keep).to_pylist():
            row = metadata_row(cfg.for_variant(pair["variant"]), pair, status="ok", inference_s=0.25)
            yield pa.Table.from_pylist([row], schema=ROW_SCHEMA)
        if then is not None:
            raise then

    return pass_batches


def test_pairs_of_dropped_blocks_get_worker_lost_rows_and_are_counted(run_cfg, monkeypatch):
    monkeypatch.setattr(runner, "pass_batches", passes_returning(4))
    summary = runner.run(run_cfg).summary
    table = record.read_metadata(run_cfg)
    assert table.num_rows == 6 and len(set(keys(table))) == 6  # exactly one row per pair
    assert summary["pairs"] == summary["this_attempt"]["pairs"] == 6
    assert summary["by_status"] == {"ok": 4, "failed": 2} and summary["by_error_reason"] == {"worker_lost": 2}
    assert summary["this_attempt"]["gpu_s"] == 1.0
    assert summary["by_variant"] == {"default": {"ok": 4, "failed": 2}}

    # The rerun with retry_failed computes exactly the two lost pairs.
    computed: list[int] = []

    def count(cfg, planned, prompts=None):
        computed.append(planned.pairs)
        yield from passes_returning(planned.pairs)(cfg, planned)

    monkeypatch.setattr(runner, "pass_batches", count)
    again = runner.run(run_cfg.model_copy(update={"retry_failed": True})).summary
    assert computed == [2] and again["by_status"] == {"ok": 6, "failed": 0} and again["pairs"] == 6


def test_a_complete_pass_reads_nothing_back(run_cfg, monkeypatch):
    monkeypatch.setattr(runner, "pass_batches", passes_returning(6))
    monkeypatch.setattr(planning, "unrecorded", lambda *a: pytest.fail("read back although no row was missing"))
    assert runner.run(run_cfg).summary["by_status"] == {"ok": 6, "failed": 0}


def test_too_many_lost_blocks_stop_the_run_keeping_finished_rows(run_cfg, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "pass_batches", passes_returning(3, then=ray.exceptions.RayActorError()))
    with pytest.raises(RunStopped, match="run acct stopped: more than 10 blocks") as info:
        runner.run(run_cfg)
    assert info.value.exit_code == 2
    assert record.read_metadata(run_cfg).num_rows == 3  # flushed although part_rows was not reached
    run = tmp_path / "out" / "acct"
    assert (run / "config.json").exists() and not (run / "summary.json").exists()


def test_any_other_error_of_the_pass_propagates_after_the_flush(run_cfg, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "pass_batches", passes_returning(1, then=ValueError("boom")))
    with pytest.raises(ValueError, match="boom"):
        runner.run(run_cfg)
    assert record.read_metadata(run_cfg).num_rows == 1
    assert not (tmp_path / "out" / "acct" / "summary.json").exists()


def test_summary_json_is_what_run_returns(run_cfg, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "pass_batches", passes_returning(6))
    result = runner.run(run_cfg)
    assert json.loads((tmp_path / "out" / "acct" / "summary.json").read_text()) == result.summary
    assert result.run_uri == run_cfg.run_uri


# --- job errors before any GPU -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["model.ckpt", "s3://b/weights.BIN", "w.safetensors.pt/"])
def test_pickle_checkpoints_are_refused_by_name(cfg, source):
    with pytest.raises(JobError, match="pickle-format checkpoint, refused"):
        checks.check_model_source(cfg.model_copy(update={"model": cfg.model.model_copy(update={"source": source})}))


def test_model_sources_the_driver_checks(cfg, tmp_path):
    def with_source(source: str) -> RunConfig:
        return cfg.model_copy(update={"model": cfg.model.model_copy(update={"source": source})})

    for name in MODEL_NAMES:
        checks.check_model_source(with_source(name))
    with pytest.raises(JobError, match=re.escape(f"not a model name ({', '.join(MODEL_NAMES)})")):
        checks.check_model_source(with_source("tinyy"))
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    (pickles / "unet.bin").write_bytes(b"x")
    with pytest.raises(JobError, match="unet.bin is a pickle-format checkpoint"):
        checks.check_model_source(with_source(str(pickles)))
    (pickles / "unet.safetensors").write_bytes(b"x")
    with pytest.raises(JobError, match=r"neither a DTC checkpoint \(dtc.json\) nor a diffusers pipeline folder"):
        checks.check_model_source(with_source(str(pickles)))
    (pickles / "dtc.json").write_text(json.dumps({"default_resolution": 256}))
    assert checks.check_model_source(with_source(str(pickles))).resolution == 256


def test_the_summary_says_whether_each_variants_hint_branch_was_trained(cfg, tmp_path):
    from pipeline.core.provenance import random_provenance, with_training

    trained = tmp_path / "trained"
    trained.mkdir()
    provenance = with_training(random_provenance("tiny", 0), ["hint.adapter", "hint.encoder", "hint.film"],
                               data_uri="train.parquet", steps=10, finished_at="2026-12-02T08:00:00Z")
    (trained / "dtc.json").write_text(json.dumps({"provenance": provenance}))
    converted = tmp_path / "converted"
    converted.mkdir()
    (converted / "dtc.json").write_text(json.dumps({"provenance": random_provenance("tiny", 0)}))
    for folder in (trained, converted):
        (folder / "unet.safetensors").write_bytes(b"x")  # what the source check asks of a checkpoint folder
    variants = [{"name": "a", "model": {"source": str(trained)}}, {"name": "b", "model": {"source": str(converted)}},
                {"name": "c", "model": {"source": "tiny"}}]
    ab = RunConfig.model_validate({**cfg.model_dump(), "variants": variants})
    defaults = {name: checks.check_model_source(ab.for_variant(name)) for name in "abc"}
    records = checks.model_records(ab, defaults)
    assert records["a"]["hint_branch_trained"] is True
    assert records["a"]["provenance"]["training"]["steps"] == 10
    assert records["b"]["hint_branch_trained"] is False
    assert records["c"] == {"source": "tiny", "family": "dtc", "defaults": describe(DTC_DEFAULTS),
                            "hint_branch_trained": False, "provenance": None}
