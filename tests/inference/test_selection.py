"""Selection on tables, without Ray: shards, slices, the nightly's new-or-changed rule, variant expansion."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from pipeline.core.errors import JobError
from pipeline.inference.config import ConfigError, SelectionConfig, load_config
from pipeline.inference.manifests import Manifests
from pipeline.inference.pairing import PAIR_SCHEMA, pair_seed
from pipeline.inference.selection import (
    expand_variants,
    finished_runs,
    new_or_changed,
    plan,
    shard_of,
    slice_catalogue,
    updated_at_max,
)

BASE = ["run_id=r1", "catalogue_uri=c", "scenes_uri=s", "output_uri=o"]


def catalogue(n: int = 200, **columns) -> pa.Table:
    ids = [f"p-{i:04d}" for i in range(n)]
    data = {"product_id": ids, "image_uri": [f"s3://b/{i}.jpg" for i in ids],
            "category": [("lighting", "decor", None)[i % 3] for i in range(n)]}
    data.update(columns)
    if "updated_at" not in data:
        data["updated_at"] = pa.nulls(n, pa.string())
    return pa.table(data)


def ids(table: pa.Table) -> list[str]:
    return table.column("product_id").to_pylist()


# --- shards and slices -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_and_cover_the_catalogue(count):
    cat = catalogue(500)
    shards = [set(ids(slice_catalogue(cat, SelectionConfig(shard_count=count, shard_index=i)))) for i in range(count)]
    assert sum(len(s) for s in shards) == cat.num_rows
    assert set().union(*shards) == set(ids(cat))
    if count > 1:
        assert all(shards), "every shard gets products"
        assert max(len(s) for s in shards) < 2 * cat.num_rows / count  # roughly even


def test_shards_do_not_depend_on_row_order_or_process():
    cat = catalogue(100)
    shuffled = cat.take(pa.array(list(range(99, -1, -1))))
    sel = SelectionConfig(shard_count=4, shard_index=1)
    assert sorted(ids(slice_catalogue(cat, sel))) == sorted(ids(slice_catalogue(shuffled, sel)))
    # Pinned: a change of the shard function would move products between shards of running backfills.
    assert [shard_of(f"p-{i:04d}", 4) for i in range(6)] == [1, 2, 2, 2, 3, 3]


def test_categories_and_ids_slice_then_shard():
    cat = catalogue(300)
    lighting = slice_catalogue(cat, SelectionConfig(categories=["lighting"]))
    assert set(lighting.column("category").to_pylist()) == {"lighting"} and lighting.num_rows == 100
    picked = slice_catalogue(cat, SelectionConfig(categories=["lighting", "decor"]), {"p-0000", "p-0001", "p-0002"})
    assert ids(picked) == ["p-0000", "p-0001"]  # p-0002 has no category
    decor = SelectionConfig(categories=["decor"])
    halves = [slice_catalogue(cat, decor.model_copy(update={"shard_count": 2, "shard_index": i})) for i in (0, 1)]
    assert sorted(ids(halves[0]) + ids(halves[1])) == sorted(ids(slice_catalogue(cat, decor)))


def test_selection_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"selection.shard_index: .*less than shard_count \(2\)"):
        load_config(None, [*BASE, "selection.shard_count=2", "selection.shard_index=2"])
    with pytest.raises(ConfigError, match="selection.shard_count: "):
        load_config(None, [*BASE, "selection.shard_count=0"])
    with pytest.raises(ConfigError, match="selection.categories: "):
        load_config(None, [*BASE, "selection.categories=[]"])


# --- the nightly's new-or-changed rule -----------------------------------------------------------------------------


def done(rows: list[tuple[str, str | None]]) -> pa.Table:
    return pa.table({"product_id": [r[0] for r in rows], "product_uri": [r[1] for r in rows]},
                    schema=pa.schema([("product_id", pa.string()), ("product_uri", pa.string())]))


def test_without_updated_at_new_means_no_ok_row_for_the_same_image():
    cat = catalogue(4)  # p-0000..p-0003
    earlier = done([("p-0000", "s3://b/p-0000.jpg"),  # same image: not new
                    ("p-0001", "s3://b/old-p-0001.jpg"),  # image changed: new
                    ("p-0002", None)])  # recorded before product_uri existed: matched by id
    assert ids(new_or_changed(cat, None, earlier)) == ["p-0001", "p-0003"]
    assert ids(new_or_changed(cat, None, None)) == ids(cat)  # first run: everything


def test_with_updated_at_later_than_the_baseline_is_new():
    t = [dt.datetime(2026, 11, d, 3, tzinfo=dt.UTC) for d in (20, 23, 24, 25)]
    cat = catalogue(4, updated_at=pa.array(t, pa.timestamp("us", tz="UTC")))
    baseline = updated_at_max(pa.array(t[:3], pa.timestamp("us", tz="UTC")))
    assert baseline == {"kind": "timestamp", "value": "2026-11-24T03:00:00.000000Z"}
    # The metadata is not consulted for rows with updated_at: p-0000 has no ok row but is older than the baseline.
    assert ids(new_or_changed(cat, baseline, done([]))) == ["p-0003"]
    assert ids(new_or_changed(cat, None, None)) == ids(cat)


def test_updated_at_as_text_integers_and_nulls():
    text = catalogue(3, updated_at=pa.array(["2026-11-20T00:00:00", "2026-11-26 10:00:00", None]))
    baseline = {"kind": "timestamp", "value": "2026-11-25T00:00:00.000000Z"}
    # The null one falls back to the metadata rule: it has an ok row for the same image, so it is not new.
    assert ids(new_or_changed(text, baseline, done([("p-0002", "s3://b/p-0002.jpg")]))) == ["p-0001"]
    numbers = catalogue(3, updated_at=pa.array([5, 10, 11], pa.int64()))
    assert ids(new_or_changed(numbers, {"kind": "integer", "value": 10}, None)) == ["p-0002"]
    # A baseline of another kind cannot be compared: decided by the metadata rule for every row.
    assert ids(new_or_changed(numbers, baseline, done([("p-0000", "s3://b/p-0000.jpg")]))) == ["p-0001", "p-0002"]


def test_unparseable_updated_at_text_is_a_job_error():
    with pytest.raises(JobError, match="updated_at"):
        new_or_changed(catalogue(2, updated_at=pa.array(["yesterday", "today"])), None, None)


def _write_run(root, run_id: str, summary: dict | None, rows: list[dict]) -> None:
    import pyarrow.parquet as pq

    from pipeline.inference.metadata_row import METADATA_SCHEMA

    folder = root / run_id
    (folder / "metadata").mkdir(parents=True)
    if rows:
        full = [{name: r.get(name) for name in METADATA_SCHEMA.names} for r in rows]
        pq.write_table(pa.Table.from_pylist(full, schema=METADATA_SCHEMA), folder / "metadata" / "part-0.parquet")
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps({"run_id": run_id, **summary}))


def test_incremental_plan_reads_only_finished_earlier_runs(tmp_path):
    """Finished runs (summary.json) count; an unfinished one and the run itself do not."""
    out = tmp_path / "runs"
    ok = {"status": "ok", "variant": "default", "scene_id": "s"}
    _write_run(out, "n1", {"started_at": "2026-11-24T01:00:00Z", "selection": {"covers_catalogue": True}},
               [{**ok, "product_id": "p-0000", "product_uri": "s3://b/p-0000.jpg"},
                {**ok, "product_id": "p-0001", "product_uri": "s3://b/p-0001.jpg", "status": "failed"}])
    _write_run(out, "crashed", None, [{**ok, "product_id": "p-0002", "product_uri": "s3://b/p-0002.jpg"}])
    _write_run(out, "n2", {"started_at": "2026-11-25T01:00:00Z"},
               [{**ok, "product_id": "p-0003", "product_uri": "s3://b/p-0003.jpg"}])
    cfg = load_config(None, ["run_id=n2", "catalogue_uri=c", "scenes_uri=s", f"output_uri={out}",
                             "selection.incremental=true", "pairing.strategy=all"])
    assert [s["run_id"] for s in finished_runs(cfg)] == ["n1"]  # n2 is this run; crashed has no summary
    scenes = pa.table({"scene_id": ["s"], "image_uri": ["s3://b/s.jpg"], "mask_uri": ["s3://b/m.png"],
                       "x0": pa.nulls(1, pa.int64()), "y0": pa.nulls(1, pa.int64()), "x1": pa.nulls(1, pa.int64()),
                       "y1": pa.nulls(1, pa.int64()), "category": pa.nulls(1, pa.string())})
    planned = plan(cfg, Manifests(catalogue(4), scenes, None), started_at="2026-11-25T01:00:00Z")
    # p-0000 was ok in n1; p-0001 failed there; p-0002's run never finished; p-0003's row is this run's own.
    assert sorted(planned.pairs.column("product_id").to_pylist()) == ["p-0001", "p-0002", "p-0003"]
    assert planned.selection["earlier_finished_runs"] == 1 and planned.selection["selected_products"] == 3
    assert planned.selection["catalogue_products"] == 4 and planned.selection["incremental"] is True


# --- variants ------------------------------------------------------------------------------------------------------


def pairs(rows: list[tuple[str, str, str]]) -> pa.Table:
    cols = {name: [] for name in PAIR_SCHEMA.names}
    for pid, sid, variant in rows:
        values = {"product_id": pid, "scene_id": sid, "variant": variant, "seed": pair_seed(0, pid, sid),
                  "product_uri": "p", "scene_uri": "s", "mask_uri": None, "box": "0,0,1,1"}
        for name in PAIR_SCHEMA.names:
            cols[name].append(values.get(name))
    return pa.table(cols, schema=PAIR_SCHEMA)


def test_every_variant_gets_every_pair_with_the_same_seed():
    base = pairs([("p1", "s1", "default"), ("p1", "s2", "default"), ("p2", "s1", "b")])
    out = expand_variants(base, ["a", "b"])
    rows = out.to_pylist()
    assert sorted((r["variant"], r["product_id"], r["scene_id"]) for r in rows) == [
        ("a", "p1", "s1"), ("a", "p1", "s2"), ("b", "p1", "s1"), ("b", "p1", "s2"), ("b", "p2", "s1")]
    seeds: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        seeds.setdefault((r["product_id"], r["scene_id"]), set()).add(r["seed"])
    assert all(len(s) == 1 for s in seeds.values())
    assert expand_variants(base, ["default"]) is base  # no variants configured: unchanged
    with pytest.raises(JobError, match=r"\['b'\] are not among the configured variants"):
        expand_variants(base, ["a", "c"])


def test_variant_configs_merge_and_errors_name_the_field():
    cfg = load_config(None, [*BASE, "sampling.steps=30", "model.source=tiny",
                             'variants=[{name: fast, sampling: {steps: 10}}, {name: v2, model: {source: noop}}]'])
    assert cfg.variant_names() == ["fast", "v2"]
    assert (cfg.for_variant("fast").sampling.steps, cfg.for_variant("fast").model.source) == (10, "tiny")
    assert (cfg.for_variant("v2").sampling.steps, cfg.for_variant("v2").model.source) == (30, "noop")
    assert load_config(None, BASE).variant_names() == ["default"]
    with pytest.raises(ConfigError) as info:
        load_config(None, [*BASE, 'variants=[{name: a, sampling: {steps: 0}}, {name: b, model: {dtype: x}}]'])
    assert "variants.0.sampling.steps: Input should be greater than or equal to 1" in str(info.value)
    assert "variants.1.model.dtype:" in str(info.value)
    with pytest.raises(ConfigError, match="variants.0.sampling: .*seed cannot differ between variants"):
        load_config(None, [*BASE, "variants=[{name: a, sampling: {seed: 1}}]"])
    with pytest.raises(ConfigError, match="variant names must be unique"):
        load_config(None, [*BASE, "variants=[{name: a}, {name: a}]"])
    with pytest.raises(ConfigError, match="variants.0.name: "):
        load_config(None, [*BASE, "variants=[{name: ../x}]"])


def test_model_cache_dir_defaults_from_the_cluster_variable(monkeypatch):
    monkeypatch.setenv("TRYALL_MODEL_CACHE_DIR", "/mnt/nvme/tryall-model-cache")
    assert load_config(None, BASE).model.cache_dir == "/mnt/nvme/tryall-model-cache"
    assert load_config(None, [*BASE, "model.cache_dir=/tmp/c"]).model.cache_dir == "/tmp/c"
    monkeypatch.delenv("TRYALL_MODEL_CACHE_DIR")
    assert load_config(None, BASE).model.cache_dir is None


def test_product_ids_from_a_parquet_file(tmp_path):
    import pyarrow.parquet as pq

    from pipeline.inference.selection import selected_ids

    pq.write_table(pa.table({"product_id": ["p-0003", "p-0001"], "note": ["x", "y"]}), tmp_path / "ids.parquet")
    cfg = load_config(None, [*BASE, f"selection.product_ids_uri={tmp_path / 'ids.parquet'}",
                             "selection.product_ids=[p-0000]"])
    assert selected_ids(cfg) == {"p-0000", "p-0001", "p-0003"}
    assert ids(slice_catalogue(catalogue(5), cfg.selection, selected_ids(cfg))) == ["p-0000", "p-0001", "p-0003"]
    missing = load_config(None, [*BASE, f"selection.product_ids_uri={tmp_path / 'none.parquet'}"])
    with pytest.raises(JobError, match="selection.product_ids_uri .*none.parquet: does not exist"):
        selected_ids(missing)
