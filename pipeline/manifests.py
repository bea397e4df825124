"""Reading and validating the Parquet manifests before any heavy work starts.

Every problem of every manifest is collected and reported in one error, so a user fixes them in one go. Only the
few columns the contract names are read; other columns are allowed and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import S3Config
from pipeline.errors import JobError
from pipeline.metadata_row import PAIR_KEY
from pipeline.storage import filesystem

BOX_COLUMNS = ("x0", "y0", "x1", "y1")
MAX_LISTED = 5  # examples shown per problem


class ManifestError(JobError):
    """One or more manifests are unusable; the message lists every problem found."""


@dataclass(frozen=True)
class Manifests:
    catalogue: pa.Table  # product_id, image_uri, category
    scenes: pa.Table  # scene_id, image_uri, mask_uri, x0, y0, x1, y1, category (all present; nulls where absent)
    pairs: pa.Table | None  # product_id, scene_id, variant, seed


@dataclass(frozen=True)
class _Column:
    name: str
    kinds: tuple[str, ...]  # "string", "integer", "number" (int or float) or "box" (number or string)
    required: bool


_CATALOGUE = (
    _Column("product_id", ("string",), True),
    _Column("image_uri", ("string",), True),
    _Column("category", ("string",), False),
    _Column("updated_at", ("timestamp", "string", "integer"), False),
)
_SCENES = (
    _Column("scene_id", ("string",), True),
    _Column("image_uri", ("string",), True),
    _Column("mask_uri", ("string",), False),
    *(_Column(c, ("number", "string"), False) for c in BOX_COLUMNS),
    _Column("category", ("string",), False),
)
_PAIRS = (
    _Column("product_id", ("string",), True),
    _Column("scene_id", ("string",), True),
    _Column("variant", ("string",), False),
    _Column("seed", ("integer",), False),
)


def _kind_ok(dtype: pa.DataType, kinds: tuple[str, ...]) -> bool:
    checks = {
        "string": pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_null(dtype),
        "integer": pa.types.is_integer(dtype) or pa.types.is_null(dtype),
        "number": pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_null(dtype),
        "timestamp": pa.types.is_timestamp(dtype) or pa.types.is_date(dtype),
    }
    return any(checks[k] for k in kinds)


def _examples(values: list) -> str:
    shown = ", ".join(repr(v) for v in values[:MAX_LISTED])
    return shown + (f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else "")


def _read(name: str, uri: str, s3: S3Config | None, problems: list[str]) -> pa.Table | None:
    try:
        fs, path = filesystem(uri, s3)
        return pq.read_table(path, filesystem=fs)
    except FileNotFoundError:
        problems.append(f"{name} manifest {uri}: does not exist")
    except (OSError, pa.ArrowException, ValueError) as exc:
        problems.append(f"{name} manifest {uri}: cannot be read as Parquet ({type(exc).__name__}: {exc})")
    return None


def _check(name: str, table: pa.Table, columns: tuple[_Column, ...], id_column: str, problems: list[str]) -> bool:
    """Column presence and types, nulls in required columns, emptiness and duplicate ids."""
    ok = True
    if table.num_rows == 0:
        problems.append(f"{name} manifest: is empty (no rows)")
        ok = False
    for col in columns:
        if col.name not in table.column_names:
            if col.required:
                problems.append(f"{name} manifest: required column '{col.name}' is missing")
                ok = False
            continue
        dtype = table.schema.field(col.name).type
        if not _kind_ok(dtype, col.kinds):
            expected = " or ".join(col.kinds)
            problems.append(f"{name} manifest: column '{col.name}' has type {dtype}, expected {expected}")
            ok = False
            continue
        if col.required:
            nulls = table.column(col.name).null_count
            empties = pc.sum(pc.equal(pc.utf8_length(table.column(col.name)), 0)).as_py() or 0
            if nulls or empties:
                problems.append(f"{name} manifest: column '{col.name}' has {nulls + empties} null or empty values")
                ok = False
    if ok and id_column:
        counts = pc.value_counts(table.column(id_column)).to_pylist()
        dupes = sorted(c["values"] for c in counts if c["counts"] > 1)
        if dupes:
            problems.append(f"{name} manifest: {len(dupes)} duplicate {id_column} values: {_examples(dupes)}")
            ok = False
    return ok


def _with_columns(table: pa.Table, columns: tuple[_Column, ...]) -> pa.Table:
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


def without_region(table: pa.Table) -> pa.ChunkedArray:
    """Per row: True when it names no region to fill, neither a `mask_uri` nor a full x0, y0, x1, y1 box."""
    has_box = pc.is_valid(table.column(BOX_COLUMNS[0]))
    for c in BOX_COLUMNS[1:]:
        has_box = pc.and_(has_box, pc.is_valid(table.column(c)))
    return pc.invert(pc.or_(pc.is_valid(table.column("mask_uri")), has_box))


def _check_scene_regions(scenes: pa.Table, problems: list[str]) -> None:
    """Each scene names its region by mask_uri or by a box; a row with neither is a manifest problem."""
    missing = scenes.filter(without_region(scenes)).column("scene_id").to_pylist()
    if missing:
        problems.append(
            f"scenes manifest: {len(missing)} scenes have neither mask_uri nor a full x0,y0,x1,y1 box: "
            f"{_examples(missing)}"
        )


def load_manifests(
    catalogue_uri: str, scenes_uri: str, pairs_uri: str | None, s3: S3Config | None = None
) -> Manifests:
    """Read and validate all manifests; raise one ManifestError listing every problem."""
    problems: list[str] = []
    raw_catalogue = _read("catalogue", catalogue_uri, s3, problems)
    raw_scenes = _read("scenes", scenes_uri, s3, problems)
    raw_pairs = _read("pairs", pairs_uri, s3, problems) if pairs_uri else None

    catalogue = scenes = pairs = None
    if raw_catalogue is not None and _check("catalogue", raw_catalogue, _CATALOGUE, "product_id", problems):
        catalogue = _with_columns(raw_catalogue, _CATALOGUE)
    if raw_scenes is not None and _check("scenes", raw_scenes, _SCENES, "scene_id", problems):
        scenes = _with_columns(raw_scenes, _SCENES)
        _check_scene_regions(scenes, problems)
    if raw_pairs is not None and _check("pairs", raw_pairs, _PAIRS, "", problems):
        pairs = _with_columns(raw_pairs, _PAIRS)
        pairs = pairs.set_column(
            pairs.column_names.index("variant"), "variant", pc.fill_null(pairs.column("variant"), "default")
        )
        _check_pairs(pairs, catalogue, scenes, problems)

    if problems:
        raise ManifestError("the manifests have problems:\n" + "\n".join(f"  - {p}" for p in problems))
    assert catalogue is not None and scenes is not None
    return Manifests(catalogue=catalogue, scenes=scenes, pairs=pairs)


def _check_pairs(pairs: pa.Table, catalogue: pa.Table | None, scenes: pa.Table | None, problems: list[str]) -> None:
    if catalogue is not None:
        unknown = pc.invert(pc.is_in(pairs.column("product_id"), value_set=catalogue.column("product_id")))
        names = sorted(set(pairs.filter(unknown).column("product_id").to_pylist()))
        if names:
            problems.append(f"pairs manifest: {len(names)} product_id values not in the catalogue: {_examples(names)}")
    if scenes is not None:
        unknown = pc.invert(pc.is_in(pairs.column("scene_id"), value_set=scenes.column("scene_id")))
        names = sorted(set(pairs.filter(unknown).column("scene_id").to_pylist()))
        if names:
            problems.append(f"pairs manifest: {len(names)} scene_id values not in the scenes: {_examples(names)}")
    empty_variants = pc.sum(pc.equal(pc.utf8_length(pairs.column("variant")), 0)).as_py() or 0
    if empty_variants:
        problems.append(
            f"pairs manifest: column 'variant' has {empty_variants} empty values (leave it null for 'default')"
        )
    key = list(PAIR_KEY)
    counts = pairs.group_by(key).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts.column("count_all"), 1)).select(key).to_pylist()
    dupes = ["/".join(r[k] for k in key) for r in sorted(repeated, key=lambda r: tuple(r[k] for k in key))]
    if dupes:
        problems.append(f"pairs manifest: {len(dupes)} duplicate (product_id, scene_id, variant): {_examples(dupes)}")
