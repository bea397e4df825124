"""Helpers shared by the reliability tests: configuration files, reading a run's record, counting outcomes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

TINY = {"model": {"source": "tiny", "allow_random_weights": True}, "sampling": {"steps": 2, "resolution": 64}}


def write_config(path: Path, config: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return str(path)


def s3_config(endpoint: str) -> dict[str, Any]:
    return {"endpoint_url": endpoint, "region": "us-east-1"}


def s3fs_for(endpoint: str):
    import s3fs

    # No instance cache and no listing cache: every assertion reads what the server holds now.
    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


def read_rows(fs, run_path: str) -> list[dict]:
    """Every metadata row of the run, across all its final parts (temporary names excluded)."""
    meta = f"{run_path}/metadata"
    if not fs.exists(meta):
        return []
    files = sorted(f for f in fs.find(meta) if f.endswith(".parquet") and "/.tmp-" not in f)
    if not files:
        return []
    return pa.concat_tables([pq.read_table(f, filesystem=fs) for f in files]).to_pylist()


def part_files(fs, run_path: str) -> list[str]:
    meta = f"{run_path}/metadata"
    if not fs.exists(meta):
        return []
    return sorted(f for f in fs.find(meta) if f.endswith(".parquet"))


def accounting(rows: list[dict], expected: set[tuple[str, str, str]]) -> dict[str, int]:
    """Pairs lost (expected, no row), duplicated (more than one row) and unexpected (a row for no such pair)."""
    counts = Counter((r["product_id"], r["scene_id"], r["variant"]) for r in rows)
    return {
        "rows": len(rows),
        "lost": len(expected - set(counts)),
        "duplicated": sum(1 for n in counts.values() if n > 1),
        "unexpected": len(set(counts) - expected),
    }


def read_json(fs, path: str) -> dict:
    return json.loads(fs.cat(path))
