"""The run folder's record: metadata parts (size, timing, temporaries, older parts), resume keys and the summary."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core import storage
from pipeline.inference import progress as progress_module
from pipeline.inference import record
from pipeline.inference.config import RunConfig
from pipeline.inference.metadata_row import METADATA_SCHEMA, PAIR_KEY, ROW_SCHEMA, metadata_row
from pipeline.inference.progress import Progress


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    return RunConfig(run_id="rec", catalogue_uri="c.parquet", scenes_uri="s.parquet", output_uri=str(tmp_path),
                     model={"source": "noop"})


def rows(cfg: RunConfig, ids: list[tuple[str, str]], status: str = "ok", variant: str = "default") -> pa.Table:
    reason = None if status == "ok" else "decode_error"
    pairs = [{"product_id": p, "scene_id": s, "variant": variant, "seed": i, "product_uri": f"u/{p}"}
             for i, (p, s) in enumerate(ids)]
    built = [metadata_row(cfg, pair, status=status, error_reason=reason) for pair in pairs]
    return pa.Table.from_pylist(built, schema=ROW_SCHEMA)


def pairs(n: int) -> list[tuple[str, str]]:
    return [(f"p{i}", "s") for i in range(n)]


def parts(cfg: RunConfig) -> list[Path]:
    """The run's metadata parts in the order they were written (their names carry a counter)."""
    folder = Path(record.metadata_uri(cfg))
    return sorted(folder.glob("part-*.parquet")) if folder.exists() else []


class FakeClock:
    """Stands in for the `time` module inside `record`: monotonic time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def module(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(monotonic=lambda: self.now, time_ns=time.time_ns, strftime=time.strftime,
                                     gmtime=time.gmtime)


# --- the writer --------------------------------------------------------------------------------------------------


def test_a_part_is_written_once_part_rows_are_buffered_and_flush_writes_the_rest(cfg):
    writer = record.MetadataWriter(cfg, part_rows=4, part_seconds=3600)
    for start in range(0, 9, 3):  # batches of 3 rows: a batch is never split across parts
        writer.add(rows(cfg, pairs(9)[start:start + 3]))
    assert [pq.read_metadata(p).num_rows for p in parts(cfg)] == [6]
    writer.flush()
    writer.flush()  # nothing buffered: no empty part
    assert [pq.read_metadata(p).num_rows for p in parts(cfg)] == [6, 3]
    table = record.read_metadata(cfg)
    assert sorted(table.column("product_id").to_pylist()) == sorted(p for p, _ in pairs(9))
    assert table.schema == METADATA_SCHEMA and table.column("finished_at").null_count == 0


def test_a_part_is_written_after_part_seconds_even_when_small(cfg, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(record, "time", clock.module())
    writer = record.MetadataWriter(cfg, part_rows=1000, part_seconds=60)
    writer.add(rows(cfg, pairs(2)))
    clock.now += 59
    writer.add(rows(cfg, [("q", "s")]))
    assert parts(cfg) == []
    clock.now += 1
    writer.add(rows(cfg, [("r", "s")]))
    assert [pq.read_metadata(p).num_rows for p in parts(cfg)] == [4]
    clock.now += 30
    writer.add(rows(cfg, [("t", "s")]))  # the clock restarts at each part
    assert [pq.read_metadata(p).num_rows for p in parts(cfg)] == [4]


def test_finished_at_is_stamped_when_the_driver_receives_the_rows(cfg):
    before = time.time()
    writer = record.MetadataWriter(cfg, part_rows=1)
    writer.add(rows(cfg, pairs(1)))
    stamped = record.read_metadata(cfg).column("finished_at")[0].as_py().timestamp()
    assert before - 1 <= stamped <= time.time() + 1


# --- reading -----------------------------------------------------------------------------------------------------


def test_no_metadata_yet_reads_as_an_empty_table(cfg):
    assert record.read_metadata(cfg).schema == METADATA_SCHEMA and record.read_metadata(cfg).num_rows == 0
    assert record.done_keys(cfg, retry_failed=True).column_names == list(PAIR_KEY)


def test_temporary_and_hidden_files_are_never_read(cfg, tmp_path, monkeypatch):
    writer = record.MetadataWriter(cfg, part_rows=1)
    writer.add(rows(cfg, pairs(1)))
    folder = tmp_path / "rec" / "metadata"

    def killed_before_rename(src, dst):
        raise OSError("the driver died before the rename")

    # The writer's own temporary, left behind by a write that never reached its rename: a whole file, not a part.
    monkeypatch.setattr(storage.os, "replace", killed_before_rename)
    with pytest.raises(OSError, match="before the rename"):
        writer.add(rows(cfg, [("ghost", "s")]))
    monkeypatch.undo()
    left = [p.name for p in folder.iterdir() if p.name.startswith(storage.TEMP_PREFIX)]
    assert len(left) == 1 and left[0].endswith(".parquet"), list(folder.iterdir())
    (folder / f"{storage.TEMP_PREFIX}0123-part-x-00009.parquet").write_bytes(b"PAR1 truncated")  # a half-written one
    (folder / "_SUCCESS").write_bytes(b"")
    assert record.read_metadata(cfg).column("product_id").to_pylist() == ["p0"]
    assert record.done_keys(cfg, retry_failed=True).column("product_id").to_pylist() == ["p0"]


def test_parts_written_before_a_column_existed_read_it_as_null(cfg, tmp_path):
    folder = tmp_path / "rec" / "metadata"
    folder.mkdir(parents=True)
    old = rows(cfg, [("old", "s")]).drop_columns(["product_uri", "inference_node"])
    pq.write_table(old, folder / "part-old-00000.parquet")
    record.MetadataWriter(cfg, part_rows=1).add(rows(cfg, [("new", "s")]))
    table = record.read_metadata(cfg)
    assert table.schema == METADATA_SCHEMA
    got = {r["product_id"]: (r["product_uri"], r["inference_node"], r["status"]) for r in table.to_pylist()}
    assert got == {"old": (None, None, "ok"), "new": ("u/new", None, "ok")}


# --- resume keys -------------------------------------------------------------------------------------------------


def test_done_keys_with_and_without_retry_failed(cfg):
    writer = record.MetadataWriter(cfg, part_rows=3)
    writer.add(rows(cfg, pairs(2)))
    writer.add(rows(cfg, [("bad", "s")], status="failed"))  # part 1: two ok, one failed
    writer.add(rows(cfg, [("bad2", "s"), ("bad3", "s"), ("bad4", "s")], status="failed"))  # part 2: all failed

    def keys(table: pa.Table) -> set[tuple]:
        return set(zip(*(table.column(c).to_pylist() for c in PAIR_KEY), strict=True))

    everything = {(p, "s", "default") for p in ("p0", "p1", "bad", "bad2", "bad3", "bad4")}
    assert keys(record.done_keys(cfg, retry_failed=False)) == everything
    assert len(parts(cfg)) == 2
    assert keys(record.done_keys(cfg, retry_failed=True)) == {("p0", "s", "default"), ("p1", "s", "default")}
    # The failed rows are gone from the record (a retried pair then ends with exactly one row): the part holding
    # only failed rows is removed, the other rewritten with its ok rows, whole, under the same name.
    assert len(parts(cfg)) == 1
    table = record.read_metadata(cfg)
    assert sorted(table.column("product_id").to_pylist()) == ["p0", "p1"] and table.schema == METADATA_SCHEMA


# --- the summary -------------------------------------------------------------------------------------------------


def test_summary_counts_by_status_and_reason(cfg):
    table = pa.concat_tables([rows(cfg, pairs(3)), rows(cfg, [("x", "s"), ("y", "s")], status="failed")])
    summary = record.build_summary(cfg, table, attempt_pairs=4, wall_s=2.0, gpu_s=0.5)
    assert summary["pairs"] == 5
    assert summary["by_status"] == {"ok": 3, "failed": 2}
    assert summary["by_error_reason"] == {"decode_error": 2}
    assert summary["this_attempt"] == {"pairs": 4, "wall_s": 2.0, "gpu_s": 0.5, "pairs_per_second": 2.0}
    assert summary["config_hash"] == cfg.config_hash() and summary["run_id"] == "rec"
    empty = record.build_summary(cfg, METADATA_SCHEMA.empty_table(), attempt_pairs=0, wall_s=0.0, gpu_s=0.0)
    assert empty["by_status"] == {"ok": 0, "failed": 0} and empty["this_attempt"]["pairs_per_second"] == 0.0


def test_summary_is_removed_first_and_written_last(cfg, tmp_path):
    record.write_config(cfg)
    record.write_summary(cfg, {"run_id": "rec", "pairs": 1})
    summary = tmp_path / "rec" / "summary.json"
    assert json.loads(summary.read_text()) == {"run_id": "rec", "pairs": 1}
    record.clear_summary(cfg)
    assert not summary.exists() and (tmp_path / "rec" / "config.json").exists()
    record.clear_summary(cfg)  # nothing to remove: fine


def test_progress_logs_at_most_every_interval_with_rate_and_time_left(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(progress_module, "time", clock.module())
    progress = Progress(total=4, interval_s=10, started=clock.now, _last_log=clock.now)
    assert progress.update(["ok"]) is None
    clock.now += 10
    line = progress.update(["failed", "ok"])
    assert line == "progress: 3/4 pairs (75%), 1 failed, 0.30 pairs/s, 10s elapsed, about 3s left"
    clock.now += 3590
    assert progress.update(["ok"]) is None and progress.done == 4  # the last line is the run's to log
    assert progress.line() == "progress: 4/4 pairs (100%), 1 failed, 0.00 pairs/s, 1h00m elapsed, done"


def test_tally_rows_counts_what_the_dataset_reads_an_older_part_without_variant_included(cfg):
    """Part by part, the tally holds what one read of the whole folder (pyarrow's dataset, the declared schema)
    counts; a part written before a column existed counts it as null, as that read does."""
    writer = record.MetadataWriter(cfg, part_rows=3)
    writer.add(rows(cfg, pairs(4)))
    writer.add(rows(cfg, [("f1", "s"), ("f2", "s")], status="failed", variant="b"))
    writer.flush()
    older = rows(cfg, [("o1", "s")]).drop_columns(["variant"])
    pq.write_table(older, Path(record.metadata_uri(cfg)) / "part-older.parquet")
    reference = record.RowTally()
    reference.add(record.read_metadata(cfg))
    assert record.tally_rows(cfg) == reference
    assert reference.rows == 7 and reference.statuses == {"ok": 5, "failed": 2} and None in reference.variants
