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

from pipeline.core.manifest_tables import (
    BOX_COLUMNS,
    MAX_LISTED,
    Column,
    ManifestError,
    check_columns,
    check_table,
    contract_columns,
    listed,
    null_or_empty,
    read_manifest,
)
from pipeline.core.storage import S3Config, filesystem
from pipeline.inference.key_sets import digests, repeated
from pipeline.inference.keys import DEFAULT_VARIANT

PAIRS_BATCH_ROWS = 65_536  # pairs-manifest rows checked at a time


@dataclass(frozen=True)
class Manifests:
    catalogue: pa.Table  # product_id, image_uri, category, updated_at, title
    scenes: pa.Table  # scene_id, image_uri, mask_uri, x0, y0, x1, y1, category (all present; nulls where absent)
    pairs: pa.Table | None  # product_id, scene_id, variant, seed: a pairs manifest given as a table (tests, tools)
    pairs_uri: str | None = None  # the checked pairs manifest, read in chunks by the planning stage


_CATALOGUE = (
    Column("product_id", ("string",), True),
    Column("image_uri", ("string",), True),
    Column("category", ("string",), False),
    Column("updated_at", ("timestamp", "string", "integer"), False),
    # The product's name, for text-conditioned models' prompts (`sampling.prompt`'s {title}).
    Column("title", ("string",), False),
)
_SCENES = (
    Column("scene_id", ("string",), True),
    Column("image_uri", ("string",), True),
    Column("mask_uri", ("string",), False),
    *(Column(c, ("number", "string"), False) for c in BOX_COLUMNS),
    Column("category", ("string",), False),
)
_PAIRS = (
    Column("product_id", ("string",), True),
    Column("scene_id", ("string",), True),
    Column("variant", ("string",), False),
    Column("seed", ("integer",), False),
)


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
            f"{listed(missing)}"
        )


def load_manifests(
    catalogue_uri: str, scenes_uri: str, pairs_uri: str | None, s3: S3Config | None = None,
    *, variants: list[str] | None = None,
) -> Manifests:
    """Read and validate all manifests; raise one ManifestError listing every problem.

    `variants`: the run's configured variant names; a pairs manifest naming another is a problem too.
    """
    problems: list[str] = []
    raw_catalogue = read_manifest("catalogue", catalogue_uri, s3, problems)
    raw_scenes = read_manifest("scenes", scenes_uri, s3, problems)

    catalogue = scenes = None
    if raw_catalogue is not None and check_table("catalogue", raw_catalogue, _CATALOGUE, "product_id", problems):
        catalogue = contract_columns(raw_catalogue, _CATALOGUE)
    if raw_scenes is not None and check_table("scenes", raw_scenes, _SCENES, "scene_id", problems):
        scenes = contract_columns(raw_scenes, _SCENES)
        _check_scene_regions(scenes, problems)
    if pairs_uri:
        _check_pairs_manifest(pairs_uri, s3, catalogue, scenes, variants, problems)

    if problems:
        raise ManifestError("the manifests have problems:\n" + "\n".join(f"  - {p}" for p in problems))
    assert catalogue is not None and scenes is not None
    return Manifests(catalogue=catalogue, scenes=scenes, pairs=None, pairs_uri=pairs_uri)


def pairs_columns(table: pa.Table) -> pa.Table:
    """Pairs-manifest rows as the contract's columns, a null variant read as `default`."""
    pairs = contract_columns(table, _PAIRS)
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
        usable = check_columns("pairs", dataset.schema, _PAIRS, problems)
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
                        f"{listed(examples, total=len(dupes))}")


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
            self.null_or_empty[column] = self.null_or_empty.get(column, 0) + null_or_empty(batch, column)
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
