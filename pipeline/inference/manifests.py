"""Reading and validating the Parquet manifests before any heavy work starts.

Every problem of every manifest is collected and reported in one error, so a user fixes them in one go. Only the
few columns the contract names are read; other columns are allowed and ignored. The catalogue and the scenes are
held (one row a product or scene); the pairs manifest, one row a pair, is checked batch by batch and not kept: the
planning stage reads it again with Ray Data (`pipeline.inference.planning`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.core.errors import JobError
from pipeline.core.storage import S3Config, filesystem
from pipeline.inference.key_sets import digests, repeated
from pipeline.inference.keys import DEFAULT_VARIANT

BOX_COLUMNS = ("x0", "y0", "x1", "y1")
MAX_LISTED = 5  # examples shown per problem
PAIRS_BATCH_ROWS = 65_536  # pairs-manifest rows checked at a time


class ManifestError(JobError):
    """One or more manifests are unusable; the message lists every problem found."""


@dataclass(frozen=True)
class Manifests:
    catalogue: pa.Table  # product_id, image_uri, category
    scenes: pa.Table  # scene_id, image_uri, mask_uri, x0, y0, x1, y1, category (all present; nulls where absent)
    pairs: pa.Table | None  # product_id, scene_id, variant, seed: a pairs manifest given as a table (tests, tools)
    pairs_uri: str | None = None  # the checked pairs manifest, read in chunks by the planning stage


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


def _examples(values: list, total: int | None = None) -> str:
    """The first MAX_LISTED of `values`, and how many more there are of `total` (default: len(values))."""
    total = len(values) if total is None else total
    shown = values[:MAX_LISTED]
    return ", ".join(repr(v) for v in shown) + (f" and {total - len(shown)} more" if total > len(shown) else "")


def _read(name: str, uri: str, s3: S3Config | None, problems: list[str]) -> pa.Table | None:
    try:
        fs, path = filesystem(uri, s3)
        return pq.read_table(path, filesystem=fs)
    except FileNotFoundError:
        problems.append(f"{name} manifest {uri}: does not exist")
    except (OSError, pa.ArrowException, ValueError) as exc:
        problems.append(f"{name} manifest {uri}: cannot be read as Parquet ({type(exc).__name__}: {exc})")
    return None


def _check_columns(name: str, schema: pa.Schema, columns: tuple[_Column, ...], problems: list[str]) -> list[str]:
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


def _null_or_empty(table: pa.Table, column: str) -> int:
    values = table.column(column)
    return values.null_count + (pc.sum(pc.equal(pc.utf8_length(values), 0)).as_py() or 0)


def _check(name: str, table: pa.Table, columns: tuple[_Column, ...], id_column: str, problems: list[str]) -> bool:
    """Column presence and types, nulls in required columns, emptiness and duplicate ids."""
    ok = table.num_rows > 0
    if not ok:
        problems.append(f"{name} manifest: is empty (no rows)")
    usable = _check_columns(name, table.schema, columns, problems)
    if not usable:
        return False
    for column in usable:
        bad = _null_or_empty(table, column)
        if bad:
            problems.append(f"{name} manifest: column '{column}' has {bad} null or empty values")
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
    catalogue_uri: str, scenes_uri: str, pairs_uri: str | None, s3: S3Config | None = None,
    *, variants: list[str] | None = None,
) -> Manifests:
    """Read and validate all manifests; raise one ManifestError listing every problem.

    `variants`: the run's configured variant names; a pairs manifest naming another is a problem too.
    """
    problems: list[str] = []
    raw_catalogue = _read("catalogue", catalogue_uri, s3, problems)
    raw_scenes = _read("scenes", scenes_uri, s3, problems)

    catalogue = scenes = None
    if raw_catalogue is not None and _check("catalogue", raw_catalogue, _CATALOGUE, "product_id", problems):
        catalogue = _with_columns(raw_catalogue, _CATALOGUE)
    if raw_scenes is not None and _check("scenes", raw_scenes, _SCENES, "scene_id", problems):
        scenes = _with_columns(raw_scenes, _SCENES)
        _check_scene_regions(scenes, problems)
    if pairs_uri:
        _check_pairs_manifest(pairs_uri, s3, catalogue, scenes, variants, problems)

    if problems:
        raise ManifestError("the manifests have problems:\n" + "\n".join(f"  - {p}" for p in problems))
    assert catalogue is not None and scenes is not None
    return Manifests(catalogue=catalogue, scenes=scenes, pairs=None, pairs_uri=pairs_uri)


def pairs_columns(table: pa.Table) -> pa.Table:
    """Pairs-manifest rows as the contract's columns, a null variant read as `default`."""
    pairs = _with_columns(table, _PAIRS)
    return pairs.set_column(pairs.column_names.index("variant"), "variant",
                            pc.fill_null(pairs.column("variant"), DEFAULT_VARIANT))


def pairs_dataset(uri: str, s3: S3Config | None) -> ds.Dataset:
    """The pairs manifest (a file or a folder of Parquet files) as a pyarrow dataset, read batch by batch."""
    fs, path = filesystem(uri, s3)
    return ds.dataset(path, format="parquet", filesystem=fs)


def read_pairs(uri: str, s3: S3Config | None = None) -> pa.Table:
    """The whole pairs manifest in contract columns: for tools and tests on small manifests; runs stream it."""
    return pairs_columns(pairs_dataset(uri, s3).to_table())


def _check_pairs_manifest(uri: str, s3: S3Config | None, catalogue: pa.Table | None, scenes: pa.Table | None,
                          variants: list[str] | None, problems: list[str]) -> None:
    """The pairs manifest's problems, read in batches of PAIRS_BATCH_ROWS: memory stays flat in its length."""
    try:
        dataset = pairs_dataset(uri, s3)
        usable = _check_columns("pairs", dataset.schema, _PAIRS, problems)
        if not usable:
            return
        names = [c.name for c in _PAIRS if c.name in dataset.schema.names]
        tally = _PairsTally(catalogue, scenes, variants)
        for batch in dataset.to_batches(columns=names, batch_size=PAIRS_BATCH_ROWS):
            tally.add(pairs_columns(pa.Table.from_batches([batch])))
        dupes = repeated(tally.digests)
        examples = _duplicate_examples(dataset, names, dupes) if len(dupes) else []
    except FileNotFoundError:
        problems.append(f"pairs manifest {uri}: does not exist")
        return
    except (OSError, pa.ArrowException, ValueError) as exc:
        problems.append(f"pairs manifest {uri}: cannot be read as Parquet ({type(exc).__name__}: {exc})")
        return
    problems.extend(tally.problems(usable))
    if len(dupes):
        problems.append(f"pairs manifest: {len(dupes)} duplicate (product_id, scene_id, variant): "
                        f"{_examples(examples, total=len(dupes))}")


class _FirstNames:
    """The rows that named an unknown value, and the first MAX_LISTED of those values in sorted order: what a report
    shows, in memory that does not grow with a manifest whose ids are mostly unknown (a set of every such id would)."""

    def __init__(self) -> None:
        self.rows = 0
        self.names: list[str] = []
        self.more = False  # whether distinct values past `names` were seen

    def add(self, values: pa.ChunkedArray | pa.Array) -> None:
        values = values.filter(pc.and_(pc.is_valid(values), pc.greater(pc.utf8_length(values), 0)))
        self.rows += len(values)
        if not len(values):
            return
        distinct = pc.unique(values)
        first = pc.take(distinct, pc.array_sort_indices(distinct)[:MAX_LISTED]).to_pylist()
        merged = sorted({*self.names, *first})
        self.more = self.more or len(distinct) > MAX_LISTED or len(merged) > MAX_LISTED
        self.names = merged[:MAX_LISTED]

    def __str__(self) -> str:
        return ", ".join(repr(v) for v in self.names) + (" and others" if self.more else "")


class _PairsTally:
    """What `_check_pairs_manifest` finds, batch after batch: counts, unknown names, key digests."""

    def __init__(self, catalogue: pa.Table | None, scenes: pa.Table | None, variants: list[str] | None) -> None:
        self.catalogue, self.scenes = catalogue, scenes
        self.variants = None if variants in (None, [DEFAULT_VARIANT]) else {*variants, DEFAULT_VARIANT}
        self.rows = 0
        self.null_or_empty: dict[str, int] = {}
        self.unknown = {column: _FirstNames() for column in ("product_id", "scene_id", "variant")}
        self.empty_variants = 0
        self.digests: list[np.ndarray] = []

    def add(self, batch: pa.Table) -> None:
        self.rows += batch.num_rows
        for column in ("product_id", "scene_id"):
            self.null_or_empty[column] = self.null_or_empty.get(column, 0) + _null_or_empty(batch, column)
        known = {"product_id": self.catalogue, "scene_id": self.scenes}
        for column, table in known.items():
            if table is not None:
                unknown = pc.invert(pc.is_in(batch.column(column), value_set=table.column(column)))
                self.unknown[column].add(batch.filter(unknown).column(column))
        variant = batch.column("variant")
        self.empty_variants += pc.sum(pc.equal(pc.utf8_length(variant), 0)).as_py() or 0
        if self.variants is not None:
            named = pc.is_in(variant, value_set=pa.array(sorted(self.variants), pa.string()))
            self.unknown["variant"].add(batch.filter(pc.invert(named)).column("variant"))
        complete = pc.and_(pc.is_valid(batch.column("product_id")), pc.is_valid(batch.column("scene_id")))
        self.digests.append(digests(batch.filter(complete)))

    def problems(self, usable: list[str]) -> list[str]:
        found = []
        if not self.rows:
            found.append("pairs manifest: is empty (no rows)")
        for column in usable:
            if self.null_or_empty.get(column):
                found.append(f"pairs manifest: column '{column}' has {self.null_or_empty[column]} null or empty "
                             "values")
        for column, what in (("product_id", "the catalogue"), ("scene_id", "the scenes")):
            unknown = self.unknown[column]
            if unknown.rows:
                found.append(f"pairs manifest: {unknown.rows} pairs name {column} values not in {what}: {unknown}")
        if self.empty_variants:
            found.append(f"pairs manifest: column 'variant' has {self.empty_variants} empty values (leave it null "
                         "for 'default')")
        if self.unknown["variant"].rows:
            found.append(f"pairs manifest: variant values {self.unknown['variant'].names} are not among the "
                         f"configured variants {sorted(self.variants - {DEFAULT_VARIANT})}"
                         + (" (and others)" if self.unknown["variant"].more else ""))
        return found


def _duplicate_examples(dataset: ds.Dataset, names: list[str], dupes: np.ndarray) -> list[str]:
    """The keys behind the first duplicate digests, as "product/scene/variant" (a second pass over the manifest)."""
    wanted = set(dupes[:MAX_LISTED].tolist())
    found: set[str] = set()
    for batch in dataset.to_batches(columns=names, batch_size=PAIRS_BATCH_ROWS):
        table = pairs_columns(pa.Table.from_batches([batch]))
        table = table.filter(pc.and_(pc.is_valid(table.column("product_id")), pc.is_valid(table.column("scene_id"))))
        hits = [i for i, d in enumerate(digests(table).tolist()) if d in wanted]
        for row in table.take(pa.array(hits, pa.int64())).to_pylist():
            found.add("/".join((row["product_id"], row["scene_id"], row["variant"])))
    return sorted(found)
