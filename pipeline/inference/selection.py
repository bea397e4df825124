"""Which products a run takes and which pairs it computes: catalogue slices, shards, the incremental nightly, variants.

Everything here runs on the driver before Ray Data starts, so a bad selection is a job error before any GPU is
requested. The functions on tables are pure; the ones that take a RunConfig read earlier runs' records.

- Slice: `selection.categories`, `selection.product_ids` / `product_ids_uri`.
- Shard: `stable_hash("shard", product_id) % shard_count == shard_index`. Shards of one catalogue are disjoint and
  together cover it, whatever the catalogue's row order and on every machine; all pairs of a product are in the
  product's shard.
- Incremental (the nightly): a product is new or changed when its `updated_at` is later than the largest
  `updated_at` of the catalogue the last finished whole-catalogue run under the same output_uri read; a product
  without `updated_at` (no such column, or null), or when no earlier run recorded a comparable value, is new unless
  an earlier finished run under the same output_uri has an `ok` row for the same product_id and image_uri. With no
  earlier finished run, every product is new. "Finished" means the run folder holds summary.json.
- Variants: every pair is computed once per variant, with the same seed in every variant.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.errors import JobError
from pipeline.core.storage import filesystem, join
from pipeline.inference import record
from pipeline.inference.config import RunConfig, SelectionConfig
from pipeline.inference.keys import DEFAULT_VARIANT
from pipeline.inference.manifests import Manifests, read_pairs
from pipeline.inference.metadata_row import METADATA_SCHEMA
from pipeline.inference.pairing import make_pairs, stable_hash

log = logging.getLogger(__name__)

SHARD_SALT = "shard"


@dataclass(frozen=True)
class Plan:
    """The pairs a run computes (all of them, before resume) and what the summary records about the selection."""

    pairs: pa.Table
    selection: dict[str, Any]


# --- slices and shards -------------------------------------------------------------------------------------------


def shard_of(product_id: str, shard_count: int) -> int:
    """The shard a product belongs to: the same in every process, on every run, whatever the row order."""
    return stable_hash(SHARD_SALT, product_id) % shard_count


def slice_catalogue(catalogue: pa.Table, selection: SelectionConfig, product_ids: set[str] | None = None) -> pa.Table:
    """The catalogue rows in the configured categories, product ids and shard (everything when nothing is set).

    `product_ids`: the ids from `selection.product_ids` and `product_ids_uri` together (None: no id filter).
    """
    mask = pa.array([True] * catalogue.num_rows, pa.bool_())
    if selection.categories:
        in_categories = pc.is_in(catalogue.column("category"), value_set=pa.array(selection.categories, pa.string()))
        mask = pc.and_(mask, pc.fill_null(in_categories, False))
    if product_ids is not None:
        listed = pa.array(sorted(product_ids), pa.string())
        mask = pc.and_(mask, pc.is_in(catalogue.column("product_id"), value_set=listed))
    if selection.shard_count > 1:
        ids = catalogue.column("product_id").to_pylist()
        mine = [shard_of(pid, selection.shard_count) == selection.shard_index for pid in ids]
        mask = pc.and_(mask, pa.array(mine, pa.bool_()))
    return catalogue.filter(mask)


def selected_ids(cfg: RunConfig) -> set[str] | None:
    """`selection.product_ids` and the ids in `selection.product_ids_uri`, together; None when neither is set."""
    sel = cfg.selection
    if not sel.product_ids and not sel.product_ids_uri:
        return None
    ids = set(sel.product_ids or ())
    if sel.product_ids_uri:
        try:
            fs, path = filesystem(sel.product_ids_uri, cfg.s3)
            table = pq.read_table(path, filesystem=fs, columns=["product_id"])
        except FileNotFoundError:
            raise JobError(f"selection.product_ids_uri {sel.product_ids_uri}: does not exist") from None
        except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
            raise JobError(
                f"selection.product_ids_uri {sel.product_ids_uri}: cannot be read as Parquet with a product_id "
                f"column ({type(exc).__name__}: {exc})"
            ) from None
        ids.update(v for v in table.column("product_id").cast(pa.string()).to_pylist() if v)
    return ids


# --- incremental -------------------------------------------------------------------------------------------------


def normalize_updated_at(column: pa.ChunkedArray | pa.Array) -> tuple[str | None, pa.Array]:
    """`updated_at` as comparable values: ("timestamp", timestamp[us, UTC]) for timestamps, dates and ISO-8601
    text (naive values are taken as UTC), ("integer", int64) for numbers; (None, all null) when absent."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = column.type
    if column.null_count == len(column):
        return None, pa.nulls(len(column), pa.int64())
    if pa.types.is_integer(kind):
        return "integer", column.cast(pa.int64())
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            column = pc.assume_timezone(column.cast(pa.timestamp("us")), "UTC")
        return "timestamp", column.cast(pa.timestamp("us", tz="UTC"))
    if pa.types.is_date(kind):
        return "timestamp", column.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    try:
        parsed = pc.cast(column, pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        try:
            parsed = pc.assume_timezone(pc.cast(column, pa.timestamp("us")), "UTC")
        except pa.ArrowInvalid as exc:
            raise JobError(f"catalogue manifest: column 'updated_at' is not ISO-8601 date/time text: {exc}") from None
    return "timestamp", parsed


def updated_at_max(column: pa.ChunkedArray | pa.Array) -> dict[str, Any] | None:
    """The catalogue's largest `updated_at`, as the summary records it (None without values)."""
    kind, values = normalize_updated_at(column)
    if kind is None:
        return None
    top = pc.max(values).as_py()
    if kind == "timestamp":
        top = top.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"kind": kind, "value": top}


def _scalar(recorded: dict[str, Any]) -> pa.Scalar:
    if recorded["kind"] == "integer":
        return pa.scalar(int(recorded["value"]), pa.int64())
    value = datetime.strptime(recorded["value"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return pa.scalar(value, pa.timestamp("us", tz="UTC"))


def new_or_changed(catalogue: pa.Table, baseline: dict[str, Any] | None, done: pa.Table | None) -> pa.Table:
    """The catalogue rows an incremental run takes (see the module's docstring).

    baseline: the last finished whole-catalogue run's recorded `updated_at` maximum ({"kind", "value"}) or None.
    done: `product_id`, `product_uri` of `ok` rows in earlier finished runs (a null product_uri, from runs recorded
    before the column existed, matches any image_uri); None or empty when there is no earlier finished run.
    """
    kind, updated = normalize_updated_at(catalogue.column("updated_at"))
    by_time = pa.nulls(catalogue.num_rows, pa.bool_())
    if kind is not None and baseline is not None and baseline.get("kind") == kind:
        by_time = pc.greater(updated, _scalar(baseline))
    elif kind is not None and baseline is not None:
        log.warning("updated_at is %s now but the last run recorded %s: deciding by earlier runs' metadata",
                    kind, baseline.get("kind"))
    if done is None or done.num_rows == 0:
        by_record = pa.array([True] * catalogue.num_rows, pa.bool_())
    else:
        by_record = _without_ok_row(catalogue, done)
    return catalogue.filter(pc.if_else(pc.is_valid(by_time), by_time, by_record))


def _without_ok_row(catalogue: pa.Table, done: pa.Table) -> pa.Array:
    """Per catalogue row: no `done` row has its product_id with its image_uri (or with a null product_uri)."""
    exact = done.filter(pc.is_valid(done.column("product_uri"))).select(["product_id", "product_uri"])
    any_uri = done.filter(pc.is_null(done.column("product_uri"))).select(["product_id"])
    rows = pa.table({"product_id": catalogue.column("product_id"), "image_uri": catalogue.column("image_uri"),
                     "row": pa.array(range(catalogue.num_rows), pa.int64())})
    unseen = rows.join(exact, keys=["product_id", "image_uri"], right_keys=["product_id", "product_uri"],
                       join_type="left anti")
    unseen = unseen.join(any_uri, keys="product_id", join_type="left anti")
    return pc.is_in(rows.column("row"), value_set=unseen.column("row").combine_chunks())


def finished_runs(cfg: RunConfig) -> list[dict[str, Any]]:
    """Summaries of the finished runs under cfg.output_uri other than this run, oldest first.

    Lists only the run folders (one delimiter listing, not the images under them) and reads their summary.json.
    """
    fs, root = filesystem(cfg.output_uri, cfg.s3)
    fs.invalidate_cache(root)
    if not fs.exists(root):
        return []
    folders = [e["name"].rstrip("/") for e in fs.ls(root, detail=True) if e.get("type") == "directory"]
    paths = [f"{f}/summary.json" for f in folders if f.rsplit("/", 1)[-1] != cfg.run_id]
    if not paths:
        return []
    found = fs.cat(paths, on_error="omit")
    summaries = []
    for path, blob in found.items():
        try:
            summary = json.loads(blob)
        except (ValueError, TypeError):
            log.warning("ignoring %s: not a JSON summary", path)
            continue
        if isinstance(summary, dict) and summary.get("run_id"):
            summaries.append(summary)
    return sorted(summaries, key=lambda s: (s.get("started_at") or s.get("finished_at") or "", s["run_id"]))


def ok_products(cfg: RunConfig, run_ids: list[str]) -> pa.Table:
    """`product_id`, `product_uri` of every `ok` row of the given runs under cfg.output_uri (distinct).

    Read batch by batch and made distinct as it goes: memory follows the products, not the runs' rows.
    """
    columns = ["product_id", "product_uri"]
    distinct = METADATA_SCHEMA.empty_table().select(columns)
    for run_id in run_ids:
        dataset = record.dataset_at(join(cfg.output_uri, run_id, "metadata"), cfg)
        if dataset is None:
            continue
        for batch in dataset.to_batches(columns=columns, filter=pc.field("status") == "ok"):
            seen = pa.concat_tables([distinct, pa.Table.from_batches([batch], schema=distinct.schema)])
            distinct = seen.group_by(columns).aggregate([])
    return distinct.select(columns)


def incremental_catalogue(cfg: RunConfig, catalogue: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
    """The new or changed products of `catalogue` (already sliced) and what the summary records about the choice."""
    try:
        earlier = finished_runs(cfg)
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot read earlier runs under {cfg.output_uri}: {type(exc).__name__}: {exc}") from None
    whole = [s for s in earlier if (s.get("selection") or {}).get("covers_catalogue")]
    recorded = [s for s in whole if (s.get("selection") or {}).get("catalogue_updated_at_max")]
    baseline_run = recorded[-1] if recorded else None
    baseline = baseline_run["selection"]["catalogue_updated_at_max"] if baseline_run else None
    kind, updated = normalize_updated_at(catalogue.column("updated_at"))
    needs_record = kind is None or baseline is None or baseline.get("kind") != kind or updated.null_count > 0
    try:
        done = ok_products(cfg, [s["run_id"] for s in earlier]) if earlier and needs_record else None
    except (OSError, pa.ArrowException) as exc:
        raise JobError(
            f"cannot read earlier runs' metadata under {cfg.output_uri}: {type(exc).__name__}: {exc}"
        ) from None
    chosen = new_or_changed(catalogue, baseline, done)
    info = {
        "earlier_finished_runs": len(earlier),
        "baseline_run": baseline_run["run_id"] if baseline_run else None,
        "baseline_updated_at_max": baseline,
        "compared_metadata_of_runs": len(earlier) if done is not None else 0,
    }
    return chosen, info


# --- the plan ----------------------------------------------------------------------------------------------------


def expand_variants(pairs: pa.Table, names: list[str]) -> pa.Table:
    """Each pair once per variant, with the pair's seed in every variant.

    Without configured variants (`names == ["default"]`) the pairs are returned as they are. With variants, a pair
    whose manifest variant is `default` is computed in every variant; one naming a configured variant only in it.
    """
    if names == [DEFAULT_VARIANT]:
        return pairs
    variant = pairs.column("variant")
    unknown = sorted(set(pc.unique(variant).to_pylist()) - set(names) - {DEFAULT_VARIANT})
    if unknown:
        raise JobError(f"pairs manifest: variant values {unknown} are not among the configured variants {names}")
    parts = []
    everywhere = pairs.filter(pc.equal(variant, DEFAULT_VARIANT))
    for name in names:
        named = pairs.filter(pc.equal(variant, name))
        stamped = everywhere.set_column(pairs.schema.get_field_index("variant"), "variant",
                                        pa.array([name] * everywhere.num_rows, pa.string()))
        parts += [stamped, named]
    return pa.concat_tables(parts)


@dataclass(frozen=True)
class Choice:
    """The catalogue products a run takes, and what the summary records about the choice."""

    catalogue: pa.Table
    selection: dict[str, Any]


def choose(cfg: RunConfig, manifests: Manifests, *, started_at: str | None = None) -> Choice:
    """The products the run takes after categories, ids, shard and the incremental comparison (one row a product)."""
    sel = cfg.selection
    catalogue = manifests.catalogue
    ids = selected_ids(cfg)
    sliced = slice_catalogue(catalogue, sel, ids)
    if ids is not None:
        listed = pa.array(sorted(ids), pa.string())
        missing = pc.sum(pc.invert(pc.is_in(listed, value_set=catalogue.column("product_id")))).as_py() or 0
        if missing:
            log.warning("selection: %d of the %d listed product ids are not in the catalogue", missing, len(ids))
    info: dict[str, Any] = {}
    chosen = sliced
    if sel.incremental:
        chosen, info = incremental_catalogue(cfg, sliced)
    recorded = {
        "incremental": bool(sel.incremental),
        "covers_catalogue": sel.covers_catalogue,
        "categories": sel.categories,
        "product_ids": len(ids) if ids is not None else None,
        "shard": {"index": sel.shard_index, "count": sel.shard_count},
        "catalogue_products": catalogue.num_rows,
        "sliced_products": sliced.num_rows,
        "selected_products": chosen.num_rows,
        # What the next incremental run compares against: the largest updated_at of the catalogue this run read.
        "catalogue_updated_at_max": updated_at_max(catalogue.column("updated_at")),
        "started_at": started_at,
        **info,
    }
    log.info("selection: %d of %d catalogue products (%d after categories/ids/shard)%s; %d variant(s)",
             chosen.num_rows, catalogue.num_rows, sliced.num_rows,
             f", incremental against {info.get('baseline_run') or 'earlier runs metadata'}" if sel.incremental else "",
             len(cfg.variant_names()))
    kept = [c for c in ("product_id", "image_uri", "category", "title") if c in chosen.column_names]
    return Choice(catalogue=chosen.select(kept), selection=recorded)


def pairs_of(cfg: RunConfig, chosen: pa.Table, scenes: pa.Table, chunk: pa.Table | None,
             variant: str | None = None) -> pa.Table:
    """The pairs of one chunk, in PAIR_SCHEMA: a pairs-manifest chunk (contract columns) when the pairing strategy is
    `pairs`, else `chosen` itself (a chunk of the chosen catalogue). Pairing is per product, so the union over chunks
    is the plan of the whole. `variant`: only that variant's pairs (None: every variant)."""
    if cfg.pairing.strategy == "pairs":
        assert chunk is not None, "pairing strategy 'pairs' needs a pairs manifest"
        chunk = chunk.filter(pc.is_in(chunk.column("product_id"), value_set=chosen.column("product_id")))
        chosen = chosen.filter(pc.is_in(chosen.column("product_id"), value_set=chunk.column("product_id")))
    pairs = make_pairs(Manifests(catalogue=chosen, scenes=scenes, pairs=chunk), cfg.pairing, cfg.sampling.seed)
    pairs = expand_variants(pairs, cfg.variant_names())
    if variant is not None:
        pairs = pairs.filter(pc.equal(pairs.column("variant"), variant))
    return pairs


def plan(cfg: RunConfig, manifests: Manifests, *, started_at: str | None = None) -> Plan:
    """The run's pairs after selection, pairing and variants, as one table, and the summary's `selection` record.

    For tools and tests on small inputs: a run plans chunk by chunk (`planning`), with the same result.
    """
    choice = choose(cfg, manifests, started_at=started_at)
    chunk = manifests.pairs
    if chunk is None and manifests.pairs_uri:
        chunk = read_pairs(manifests.pairs_uri, cfg.s3)
    pairs = pairs_of(cfg, choice.catalogue, manifests.scenes, chunk)
    return Plan(pairs=pairs, selection=choice.selection)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
