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
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.core.storage import TEMP_PREFIX, filesystem, join, write_bytes
from pipeline.inference.config import RunConfig
from pipeline.inference.cost import cost_projection
from pipeline.inference.key_sets import KeySet
from pipeline.inference.metadata_row import METADATA_SCHEMA, PAIR_KEY


def metadata_uri(cfg: RunConfig) -> str:
    return join(cfg.run_uri, "metadata")


def metadata_dataset(cfg: RunConfig) -> ds.Dataset | None:
    """The run's metadata parts as one dataset with the declared schema (None before the first part).

    Discovery skips the local writer's temporaries (`storage.TEMP_PREFIX`) and other hidden or `_` files, so a
    part is read only once it is whole; columns an older part lacks read as null.
    """
    return dataset_at(metadata_uri(cfg), cfg)


def dataset_at(uri: str, cfg: RunConfig) -> ds.Dataset | None:
    """The metadata parts under `uri` (a run's `metadata/` folder), or None when there is no such folder."""
    fs, path = filesystem(uri, cfg.s3)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return None
    return ds.dataset(path, schema=METADATA_SCHEMA, format="parquet", filesystem=fs,
                      ignore_prefixes=[TEMP_PREFIX, ".", "_"])


def read_metadata(cfg: RunConfig) -> pa.Table:
    """All metadata rows of the run so far (an empty table when there are none)."""
    dataset = metadata_dataset(cfg)
    return dataset.to_table() if dataset is not None else METADATA_SCHEMA.empty_table()


def done_keys(cfg: RunConfig, retry_failed: bool) -> pa.Table:
    """The PAIR_KEY columns of the pairs a rerun must not compute again: those with an `ok` row, and `failed` ones
    unless retried.

    With retry_failed, the parts holding failed rows are rewritten without them first, so a retried pair still
    ends with exactly one row.
    """
    if retry_failed:
        _drop_failed_rows(cfg)
    dataset = metadata_dataset(cfg)
    if dataset is None:
        return METADATA_SCHEMA.empty_table().select(PAIR_KEY)
    return dataset.to_table(columns=list(PAIR_KEY))


def done_key_set(cfg: RunConfig, retry_failed: bool) -> KeySet:
    """`done_keys` as a KeySet, read batch by batch: 16 bytes a recorded pair, whatever its ids hold."""
    if retry_failed:
        _drop_failed_rows(cfg)
    return recorded_key_set(cfg)


def recorded_key_set(cfg: RunConfig) -> KeySet:
    """The pairs that have a row in the run folder now, whatever their status."""
    dataset = metadata_dataset(cfg)
    return KeySet.of(dataset.to_batches(columns=list(PAIR_KEY)) if dataset is not None else [])


def _drop_failed_rows(cfg: RunConfig) -> None:
    dataset = metadata_dataset(cfg)
    if dataset is None:
        return
    fs, path = filesystem(metadata_uri(cfg), cfg.s3)
    for fragment in dataset.get_fragments():
        part = fragment.to_table(schema=METADATA_SCHEMA)
        kept = part.filter(pc.equal(part.column("status"), "ok"))
        if kept.num_rows == part.num_rows:
            continue
        if kept.num_rows:
            # Same key, whole-object replace: readers see the old part or the new one, never a mix.
            write_bytes(_uri(cfg.run_uri, fragment.path, path), _parquet_bytes(kept), cfg.s3)
        else:
            fs.rm(fragment.path)


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


def write_config(cfg: RunConfig) -> None:
    write_bytes(join(cfg.run_uri, "config.json"), json.dumps(cfg.public_dict(), indent=2).encode(), cfg.s3)


def clear_summary(cfg: RunConfig) -> None:
    """A rerun removes summary.json first: its presence means the run finished."""
    fs, path = filesystem(join(cfg.run_uri, "summary.json"), cfg.s3)
    if fs.exists(path):
        fs.rm(path)


TALLIED = ("status", "error_reason", "variant", "inference_s", "seam_delta_e", "region_delta_e", "quality_flags",
           "attempts")


@dataclass
class QualityTally:
    """One variant's paste-back measures (float32: 8 bytes a pair for both) and flag counts."""

    seam: array = field(default_factory=lambda: array("f"))
    region: array = field(default_factory=lambda: array("f"))
    flags: Counter = field(default_factory=Counter)
    flagged: int = 0
    retried: int = 0

    def summary(self) -> dict[str, Any]:
        return {"seam_delta_e": _distribution(self.seam), "region_delta_e": _distribution(self.region),
                "flagged_pairs": self.flagged, "by_flag": dict(sorted(self.flags.items())),
                "retried_pairs": self.retried}


def _distribution(measured: array) -> dict[str, Any]:
    values = np.frombuffer(measured, dtype=np.float32)
    if not values.size:
        return {"pairs": 0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"pairs": int(values.size), "mean": round(float(values.mean()), 3), "p50": round(float(p50), 3),
            "p90": round(float(p90), 3), "p99": round(float(p99), 3), "max": round(float(values.max()), 3)}


@dataclass
class RowTally:
    """What the summary counts of the run's rows, added up batch by batch: memory stays flat in the run's size."""

    rows: int = 0
    statuses: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    variants: dict[str, Counter] = field(default_factory=dict)
    inference_s: float = 0.0
    quality: dict[str, QualityTally] = field(default_factory=dict)

    def add(self, rows: pa.Table | pa.RecordBatch) -> None:
        self.rows += rows.num_rows
        statuses = rows.column("status").to_pylist()
        self.statuses.update(statuses)
        self.reasons.update(r for r in rows.column("error_reason").to_pylist() if r)
        variants = rows.column("variant").to_pylist()
        for variant, status in zip(variants, statuses, strict=True):
            self.variants.setdefault(variant, Counter())[status] += 1
        self.inference_s += pc.sum(rows.column("inference_s")).as_py() or 0.0
        if "seam_delta_e" in rows.column_names:
            self._add_quality(rows, np.asarray(variants, dtype=object))

    def _add_quality(self, rows: pa.Table | pa.RecordBatch, variants: np.ndarray) -> None:
        seam = rows.column("seam_delta_e").to_numpy(zero_copy_only=False).astype(np.float32)
        region = rows.column("region_delta_e").to_numpy(zero_copy_only=False).astype(np.float32)
        flags = rows.column("quality_flags").to_pylist()
        attempts = rows.column("attempts").to_pylist()
        for variant in dict.fromkeys(variants):
            mine = variants == variant
            tally = self.quality.setdefault(variant, QualityTally())
            tally.seam.frombytes(seam[mine & np.isfinite(seam)].tobytes())  # measured pairs only
            tally.region.frombytes(region[mine & np.isfinite(region)].tobytes())
            for i in np.flatnonzero(mine):
                if flags[i]:
                    tally.flagged += 1
                    tally.flags.update(flags[i])
                if (attempts[i] or 0) > 1:
                    tally.retried += 1

    def quality_by_variant(self) -> dict[str, dict[str, Any]]:
        """Per variant: the distribution of seam and region CIEDE2000 over its measured pairs, and flag counts."""
        return {v: self.quality.get(v, QualityTally()).summary() for v in sorted(self.variants)}

    def by_variant(self) -> dict[str, dict[str, int]]:
        """Rows by variant and status: {"a": {"ok": 3, "failed": 1}, ...}."""
        return {v: {"ok": 0, "failed": 0, **c} for v, c in sorted(self.variants.items())}


def tally_rows(cfg: RunConfig) -> RowTally:
    """The run folder's rows, counted part by part, each part read alone by one thread (`ParquetFile`): a dataset
    scan over all parts keeps the driver larger after a catalogue-sized run (benchmarks/README.md)."""
    tally = RowTally()
    dataset = metadata_dataset(cfg)
    for path in dataset.files if dataset is not None else []:
        with dataset.filesystem.open_input_file(path) as source, pq.ParquetFile(source) as part:
            present = [c for c in TALLIED if c in part.schema_arrow.names]  # an older part may lack a column
            for batch in part.iter_batches(columns=present, use_threads=False):
                tally.add(_with_columns(batch, TALLIED))
    return tally


def _with_columns(batch: pa.RecordBatch, names: tuple[str, ...]) -> pa.Table:
    """`batch` with the declared columns `names`, cast to the declared schema; a column it lacks as nulls."""
    columns = [batch.column(n).cast(METADATA_SCHEMA.field(n).type) if n in batch.schema.names
               else pa.nulls(batch.num_rows, METADATA_SCHEMA.field(n).type) for n in names]
    return pa.Table.from_arrays(columns, names=list(names))


def build_summary(cfg: RunConfig, rows: pa.Table | RowTally, *, attempt_pairs: int, wall_s: float,
                  gpu_s: float) -> dict:
    if isinstance(rows, pa.Table):
        table, rows = rows, RowTally()
        rows.add(table)
    statuses = rows.statuses
    return {
        "run_id": cfg.run_id,
        "pairs": rows.rows,
        "by_status": {"ok": statuses.get("ok", 0), "failed": statuses.get("failed", 0)},
        "by_error_reason": dict(sorted(rows.reasons.items())),
        "this_attempt": {
            "pairs": attempt_pairs,
            "wall_s": round(wall_s, 3),
            "gpu_s": round(gpu_s, 3),
            "pairs_per_second": round(attempt_pairs / wall_s, 4) if wall_s > 0 else 0.0,
        },
        # The whole run's model time (every attempt's rows) per image made.
        "cost": cost_projection(rows.inference_s, statuses.get("ok", 0), cfg.cost.gpu_hourly_usd,
                                basis="inference seconds on the GPU actors summed over the run's rows (model time; "
                                "idle and start-up time not counted)"),
        # Flagged pairs stay `ok`: their rows' quality_flags let downstream systems filter them.
        "quality": {"thresholds": cfg.quality.model_dump(), "by_variant": rows.quality_by_variant()},
        "config_hash": cfg.config_hash(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_summary(cfg: RunConfig, summary: dict[str, Any]) -> None:
    write_bytes(join(cfg.run_uri, "summary.json"), json.dumps(summary, indent=2).encode(), cfg.s3)
