"""The run folder is the job's record: metadata parts, config.json, and summary.json written last.

Metadata is written in Parquet parts as results stream in, each part written whole (temporary name, then
rename; or one S3 PUT), so an interrupted run keeps what it finished and a rerun skips it. A reader never sees a
partial part under a final key.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import RunConfig
from pipeline.storage import filesystem, join, write_bytes

METADATA_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("product_id", pa.string()),
        ("scene_id", pa.string()),
        ("variant", pa.string()),
        ("status", pa.string()),  # ok | failed
        ("error_reason", pa.string()),
        ("error_message", pa.string()),
        ("output_uri", pa.string()),
        ("seed", pa.int64()),
        ("model_id", pa.string()),
        ("scheduler", pa.string()),
        ("steps", pa.int32()),
        ("guidance", pa.float32()),
        ("resolution", pa.int32()),
        ("scene_width", pa.int32()),
        ("scene_height", pa.int32()),
        ("output_bytes", pa.int64()),
        ("preprocess_s", pa.float32()),
        ("inference_s", pa.float32()),
        ("postprocess_s", pa.float32()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        # The product image this row was made from: the nightly's "changed product" check compares it.
        ("product_uri", pa.string()),
        # The Ray node id of the inference actor that computed the pair (null when it never reached the model).
        ("inference_node", pa.string()),
    ]
)
PAIR_KEY = ("product_id", "scene_id", "variant")


def metadata_uri(cfg: RunConfig) -> str:
    return join(cfg.run_uri, "metadata")


def read_metadata(cfg: RunConfig) -> pa.Table:
    """All metadata rows of the run so far (an empty table when there are none)."""
    fs, path = filesystem(metadata_uri(cfg), cfg.s3)
    if not fs.exists(path):
        return METADATA_SCHEMA.empty_table()
    files = [f for f in fs.find(path) if f.endswith(".parquet") and "/.tmp-" not in f]
    if not files:
        return METADATA_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, filesystem=fs, schema=METADATA_SCHEMA) for f in sorted(files)])


def done_keys(cfg: RunConfig, retry_failed: bool) -> set[tuple[str, str, str]]:
    """Pairs a rerun must not compute again: those with an `ok` row, and `failed` ones unless retried.

    With retry_failed, the parts holding failed rows are rewritten without them first, so a retried pair still
    ends with exactly one row.
    """
    table = read_metadata(cfg)
    if table.num_rows == 0:
        return set()
    if retry_failed:
        _drop_failed_rows(cfg)
        table = read_metadata(cfg)
    return set(zip(*(table.column(c).to_pylist() for c in PAIR_KEY), strict=True))


def _drop_failed_rows(cfg: RunConfig) -> None:
    fs, path = filesystem(metadata_uri(cfg), cfg.s3)
    for f in sorted(fs.find(path)):
        if not f.endswith(".parquet") or "/.tmp-" in f:
            continue
        part = pq.read_table(f, filesystem=fs, schema=METADATA_SCHEMA)
        kept = part.filter(pa.compute.equal(part.column("status"), "ok"))
        if kept.num_rows == part.num_rows:
            continue
        if kept.num_rows:
            # Same key, whole-object replace: readers see the old part or the new one, never a mix.
            write_bytes(_uri(cfg.run_uri, f, path), _parquet_bytes(kept), cfg.s3)
        else:
            fs.rm(f)


def _uri(run_uri: str, found: str, metadata_path: str) -> str:
    return join(run_uri, "metadata", found[len(metadata_path) :].lstrip("/"))


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


class MetadataWriter:
    """Buffers rows and writes a Parquet part every `part_rows` rows or `part_seconds`, and at close."""

    def __init__(self, cfg: RunConfig, part_rows: int = 1000, part_seconds: float = 60.0) -> None:
        self._cfg = cfg
        self._prefix = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._part_rows = part_rows
        self._part_seconds = part_seconds
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._parts = 0
        self._last_flush = time.monotonic()

    def add(self, rows: pa.Table) -> None:
        """Rows as the last stage emits them; `finished_at` is stamped here, when the driver receives them."""
        now = pa.array([time.time_ns() // 1000] * rows.num_rows, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        rows = rows.append_column("finished_at", now)
        self._buffer.append(rows.select(METADATA_SCHEMA.names).cast(METADATA_SCHEMA))
        self._buffered += rows.num_rows
        if self._buffered >= self._part_rows or time.monotonic() - self._last_flush >= self._part_seconds:
            self.flush()

    def flush(self) -> None:
        if not self._buffered:
            return
        table = pa.concat_tables(self._buffer)
        uri = join(metadata_uri(self._cfg), f"{self._prefix}-{self._parts:05d}.parquet")
        write_bytes(uri, _parquet_bytes(table), self._cfg.s3)
        self._parts += 1
        self._buffer, self._buffered = [], 0
        self._last_flush = time.monotonic()


@dataclass
class Progress:
    """Counts as rows finish, with a log line at most every `interval_s` seconds."""

    total: int
    interval_s: float
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    _last_log: float = field(default_factory=time.monotonic)

    def update(self, statuses: list[str]) -> str | None:
        self.done += len(statuses)
        self.failed += sum(s != "ok" for s in statuses)
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            self._last_log = now
            return self.line()
        return None

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        return (
            f"progress: {self.done}/{self.total} pairs done ({self.failed} failed), "
            f"{self.rate():.2f} pairs/s, {time.monotonic() - self.started:.0f}s elapsed"
        )


def write_config(cfg: RunConfig) -> None:
    write_bytes(join(cfg.run_uri, "config.json"), json.dumps(cfg.public_dict(), indent=2).encode(), cfg.s3)


def clear_summary(cfg: RunConfig) -> None:
    """A rerun removes summary.json first: its presence means the run finished."""
    fs, path = filesystem(join(cfg.run_uri, "summary.json"), cfg.s3)
    if fs.exists(path):
        fs.rm(path)


def build_summary(cfg: RunConfig, table: pa.Table, *, attempt_pairs: int, wall_s: float, gpu_s: float) -> dict:
    statuses = Counter(table.column("status").to_pylist())
    reasons = Counter(r for r in table.column("error_reason").to_pylist() if r)
    return {
        "run_id": cfg.run_id,
        "pairs": table.num_rows,
        "by_status": {"ok": statuses.get("ok", 0), "failed": statuses.get("failed", 0)},
        "by_error_reason": dict(sorted(reasons.items())),
        "this_attempt": {
            "pairs": attempt_pairs,
            "wall_s": round(wall_s, 3),
            "gpu_s": round(gpu_s, 3),
            "pairs_per_second": round(attempt_pairs / wall_s, 4) if wall_s > 0 else 0.0,
        },
        "config_hash": cfg.config_hash(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_summary(cfg: RunConfig, summary: dict[str, Any]) -> None:
    write_bytes(join(cfg.run_uri, "summary.json"), json.dumps(summary, indent=2).encode(), cfg.s3)
