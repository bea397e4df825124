"""Planning in chunks (Ray Data tasks, `pipeline.inference.planning`) against planning the whole run as one table
(`selection.plan`): the same pairs, seeds and variants, whatever the chunk size, with resume and shards."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.inference import planning, record, selection
from pipeline.inference.config import RunConfig
from pipeline.inference.key_sets import KeySet
from pipeline.inference.manifests import load_manifests
from pipeline.inference.metadata_row import ROW_SCHEMA, metadata_row


def _inputs(root) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    products = [f"p{i:02d}" for i in range(30)]
    scenes = [f"s{j}" for j in range(7)]
    pq.write_table(pa.table({"product_id": products, "image_uri": [f"img/{p}.jpg" for p in products],
                             "category": ["decor" if i % 3 else "lighting" for i in range(30)]}), root / "c.parquet")
    pq.write_table(pa.table({"scene_id": scenes, "image_uri": [f"img/{s}.jpg" for s in scenes],
                             "mask_uri": [None if j % 2 else f"img/{s}.png" for j, s in enumerate(scenes)],
                             "x0": [1] * 7, "y0": [2] * 7, "x1": [30] * 7, "y1": [40] * 7,
                             "category": ["decor" if j % 2 else "lighting" for j in range(7)]}), root / "s.parquet")
    # Pairs named in manifest order that is neither by product nor by scene, one variant only in `b`.
    rows = [(products[(7 * k) % 30], scenes[(3 * k) % 7]) for k in range(60)]
    rows = list(dict.fromkeys(rows))
    variants = ["b" if k % 11 == 0 else None for k in range(len(rows))]
    pq.write_table(pa.table({"product_id": [p for p, _ in rows], "scene_id": [s for _, s in rows],
                             "variant": pa.array(variants, pa.string()), "seed": [None] * len(rows)}),
                   root / "p.parquet")
    return {"catalogue_uri": str(root / "c.parquet"), "scenes_uri": str(root / "s.parquet"),
            "pairs_uri": str(root / "p.parquet")}


CASES = {
    "pairs manifest, two variants": {"pairing": {"strategy": "pairs"}, "variants": [{"name": "a"}, {"name": "b"}]},
    "same category, shard 1 of 3": {"pairing": {"strategy": "same_category", "scenes_per_product": 2},
                                    "selection": {"shard_count": 3, "shard_index": 1}},
    "all, some categories": {"pairing": {"strategy": "all"}, "selection": {"categories": ["decor"]}},
}


def _config(tmp_path, case: str) -> RunConfig:
    inputs = _inputs(tmp_path / "in")
    if CASES[case]["pairing"]["strategy"] != "pairs":
        inputs.pop("pairs_uri")
    return RunConfig.model_validate({"run_id": "plan", "output_uri": str(tmp_path / "out"),
                                     "model": {"source": "noop"}, **inputs, **CASES[case]})


def _rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["variant"], r["product_id"], r["scene_id"]))


def _planned(cfg: RunConfig, done: KeySet) -> tuple[list[planning.PlannedPass], pa.Table]:
    manifests = load_manifests(cfg.catalogue_uri, cfg.scenes_uri, cfg.pairs_uri, variants=cfg.variant_names())
    passes = planning.write_plan(cfg, manifests, selection.choose(cfg, manifests), done)
    parts = [planning.read_part(uri, cfg) for p in passes for uri in p.parts]
    return passes, pa.concat_tables(parts) if parts else None


@pytest.mark.parametrize("case", list(CASES))
def test_chunks_plan_the_same_pairs_as_one_table(ray_local, tmp_path, monkeypatch, case):
    monkeypatch.setattr(planning, "PLAN_CHUNK_ROWS", 7)  # several chunks, cutting across products and scenes
    cfg = _config(tmp_path, case)
    manifests = load_manifests(cfg.catalogue_uri, cfg.scenes_uri, cfg.pairs_uri, variants=cfg.variant_names())
    whole = selection.plan(cfg, manifests).pairs
    assert whole.num_rows > 10

    passes, chunked = _planned(cfg, KeySet.of([]))
    assert _rows(chunked) == _rows(whole)  # ids, variants, seeds, URIs and boxes alike
    assert [p.variant for p in passes] == cfg.variant_names()
    for planned in passes:
        parts = [planning.read_part(uri, cfg) for uri in planned.parts]
        assert planned.pairs == sum(p.num_rows for p in parts)
        assert len(parts) > 1 and all(set(p.column("variant").to_pylist()) == {planned.variant} for p in parts)
        for part in parts:  # each part ordered by scene: the window within which the stages' caches hit
            scenes = part.column("scene_id").to_pylist()
            assert scenes == sorted(scenes)


def test_resume_plans_only_the_pairs_without_a_row(ray_local, tmp_path, monkeypatch):
    monkeypatch.setattr(planning, "PLAN_CHUNK_ROWS", 5)
    cfg = _config(tmp_path, "pairs manifest, two variants")
    _, first = _planned(cfg, KeySet.of([]))
    finished, failed = first.slice(0, 20), first.slice(20, 5)
    writer = record.MetadataWriter(cfg)
    for part, status in ((finished, "ok"), (failed, "failed")):
        rows = [metadata_row(cfg.for_variant(p["variant"]), p, status=status,
                             error_reason=None if status == "ok" else "decode_error") for p in part.to_pylist()]
        writer.add(pa.Table.from_pylist(rows, schema=ROW_SCHEMA))
    writer.flush()

    _, again = _planned(cfg, record.done_key_set(cfg, retry_failed=False))
    assert _rows(again) == _rows(first.slice(25))
    retry = cfg.model_copy(update={"retry_failed": True})
    _, retried = _planned(retry, record.done_key_set(retry, retry_failed=True))
    assert _rows(retried) == _rows(first.slice(20))
    assert record.read_metadata(cfg).num_rows == 20  # the failed rows were dropped for their retry

    everything = record.done_key_set(cfg, retry_failed=False)
    writer.add(pa.Table.from_pylist([metadata_row(cfg.for_variant(p["variant"]), p, status="ok")
                                     for p in first.slice(20).to_pylist()], schema=ROW_SCHEMA))
    writer.flush()
    assert len(everything) == 20
    passes, nothing = _planned(cfg, record.done_key_set(cfg, retry_failed=False))
    assert nothing is None and sum(p.pairs for p in passes) == 0


def test_segments_cut_a_pass_into_whole_parts_of_bounded_size():
    planned = planning.PlannedPass("a", ["p0", "p1", "p2", "p3", "p4"], (5, 5, 9, 2, 2))
    segments = list(planned.segments(10))
    assert [s.parts for s in segments] == [["p0", "p1"], ["p2"], ["p3", "p4"]]
    assert [s.pairs for s in segments] == [10, 9, 4] and {s.variant for s in segments} == {"a"}
    assert [s.parts for s in planned.segments(4)] == [["p0"], ["p1"], ["p2"], ["p3", "p4"]]  # a larger part alone
    assert [s.parts for s in planned.segments(100)] == [planned.parts]
    assert list(planning.PlannedPass("a", [], ()).segments(10)) == [planning.PlannedPass("a", [], ())]
