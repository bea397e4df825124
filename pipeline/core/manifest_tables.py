"""Parquet manifests checked against a contract's columns, for every job that reads one (inference, training).

Every problem is collected, so a user fixes them in one go; only the columns the contract names are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.errors import JobError
from pipeline.core.storage import S3Config, filesystem

MAX_LISTED = 5  # examples shown per problem
# A scene's (or training pair's) region given as a box, in pixels of its image.
BOX_COLUMNS = ("x0", "y0", "x1", "y1")


class ManifestError(JobError):
    """One or more manifests are unusable; the message lists every problem found."""


@dataclass(frozen=True)
class Column:
    name: str
    kinds: tuple[str, ...]  # "string", "integer", "number" (int or float) or "box" (number or string)
    required: bool


def _kind_ok(dtype: pa.DataType, kinds: tuple[str, ...]) -> bool:
    checks = {
        "string": pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_null(dtype),
        "integer": pa.types.is_integer(dtype) or pa.types.is_null(dtype),
        "number": pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_null(dtype),
        "timestamp": pa.types.is_timestamp(dtype) or pa.types.is_date(dtype),
    }
    return any(checks[k] for k in kinds)


def listed(values: list, total: int | None = None) -> str:
    """The first MAX_LISTED of `values`, and how many more there are of `total` (default: len(values))."""
    total = len(values) if total is None else total
    shown = values[:MAX_LISTED]
    return ", ".join(repr(v) for v in shown) + (f" and {total - len(shown)} more" if total > len(shown) else "")


def read_manifest(name: str, uri: str, s3: S3Config | None, problems: list[str]) -> pa.Table | None:
    try:
        fs, path = filesystem(uri, s3)
        return pq.read_table(path, filesystem=fs)
    except FileNotFoundError:
        problems.append(f"{name} manifest {uri}: does not exist")
    except (OSError, pa.ArrowException, ValueError) as exc:
        problems.append(f"{name} manifest {uri}: cannot be read as Parquet ({type(exc).__name__}: {exc})")
    return None


def check_columns(name: str, schema: pa.Schema, columns: tuple[Column, ...], problems: list[str]) -> list[str]:
    """The contract's columns are present (the required ones) and of the expected types; returns the problem-free
    required columns, or [] after any problem."""
    ok, usable = True, []
    for col in columns:
        if col.name not in schema.names:
            if col.required:
                problems.append(f"{name} manifest: required column '{col.name}' is missing")
                ok = False
            continue
        dtype = schema.field(col.name).type
        if not _kind_ok(dtype, col.kinds):
            expected = " or ".join(col.kinds)
            problems.append(f"{name} manifest: column '{col.name}' has type {dtype}, expected {expected}")
            ok = False
        elif col.required:
            usable.append(col.name)
    return usable if ok else []


def null_or_empty(table: pa.Table, column: str) -> int:
    values = table.column(column)
    return values.null_count + (pc.sum(pc.equal(pc.utf8_length(values), 0)).as_py() or 0)


def check_table(name: str, table: pa.Table, columns: tuple[Column, ...], id_column: str, problems: list[str]) -> bool:
    """Column presence and types, nulls in required columns, emptiness and duplicate ids."""
    ok = table.num_rows > 0
    if not ok:
        problems.append(f"{name} manifest: is empty (no rows)")
    usable = check_columns(name, table.schema, columns, problems)
    if not usable:
        return False
    for column in usable:
        bad = null_or_empty(table, column)
        if bad:
            problems.append(f"{name} manifest: column '{column}' has {bad} null or empty values")
            ok = False
    if ok and id_column:
        counts = pc.value_counts(table.column(id_column)).to_pylist()
        dupes = sorted(c["values"] for c in counts if c["counts"] > 1)
        if dupes:
            problems.append(f"{name} manifest: {len(dupes)} duplicate {id_column} values: {listed(dupes)}")
            ok = False
    return ok


def contract_columns(table: pa.Table, columns: tuple[Column, ...]) -> pa.Table:
    """Only the contract's columns, each present (absent optional ones as nulls of the expected type)."""
    arrays, names = [], []
    for col in columns:
        if col.name in table.column_names:
            arr = table.column(col.name)
            if col.kinds[0] == "string" and not pa.types.is_string(arr.type):
                arr = arr.cast(pa.string())
        else:
            default_type = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64()}.get(
                col.kinds[0], pa.string()
            )
            arr = pa.nulls(table.num_rows, default_type)
        arrays.append(arr)
        names.append(col.name)
    return pa.table(arrays, names=names)
