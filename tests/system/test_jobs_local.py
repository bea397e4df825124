"""The A/B, backfill and nightly jobs end to end on the local Ray (fake GPU), with local files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jobs import ab, backfill, nightly
from pipeline.inference.manifests import load_manifests
from pipeline.inference.pairing import make_pairs
from pipeline.synthetic.samples import write_sample_set

pytestmark = pytest.mark.integration

FAST = {"sampling": {"steps": 2, "resolution": 64}, "output": {"format": "png"}, "compute": {"batch_size": 4}}


def _config(tmp_path: Path, name: str, config: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _rows(run: Path) -> list[dict]:
    return pq.read_table(run / "metadata").to_pylist()


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return write_sample_set(str(root), n_products=6, n_scenes=4, scene_size=(160, 120))


def test_ab_variants_have_their_own_images_and_paired_seeds(ray_local, sample, tmp_path):
    out = tmp_path / "runs"
    config = {
        "run_id": "ab-1", "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
        "output_uri": str(out), "pairing": {"strategy": "same_category", "scenes_per_product": 1},
        "selection": {"product_ids": sample.product_ids[:2]},
        "model": {"source": "tiny", "allow_random_weights": True}, **FAST,
        "variants": [{"name": "base"}, {"name": "more-steps", "sampling": {"steps": 3, "guidance": 2.0}}],
    }
    assert ab.main(["--config", _config(tmp_path, "ab", config)]) == 0
    run = out / "ab-1"
    rows = _rows(run)
    assert len(rows) == 4  # 2 products x 1 scene x 2 variants, one row each
    assert all(r["status"] == "ok" for r in rows), rows
    by_pair: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        by_pair.setdefault((r["product_id"], r["scene_id"]), {})[r["variant"]] = r
    assert len(by_pair) == 2
    for pair, variants in by_pair.items():
        assert set(variants) == {"base", "more-steps"}, pair
        assert variants["base"]["seed"] == variants["more-steps"]["seed"]  # paired comparison
        assert (variants["base"]["steps"], variants["more-steps"]["steps"]) == (2, 3)
        assert (variants["base"]["guidance"], variants["more-steps"]["guidance"]) == (5.0, 2.0)
        for name, r in variants.items():
            assert r["output_uri"].startswith(f"{run}/images/{name}/{pair[0]}/")
            assert Path(r["output_uri"]).is_file()
            assert r["inference_node"] == ray_local.get_runtime_context().get_node_id()
            assert r["product_uri"].endswith(f"/products/{pair[0]}.jpg")
    assert sorted(p.name for p in (run / "images").iterdir()) == ["base", "more-steps"]
    summary = _summary(run)
    assert summary["variants"] == ["base", "more-steps"]
    assert summary["by_variant"] == {"base": {"ok": 2, "failed": 0}, "more-steps": {"ok": 2, "failed": 0}}


def test_ab_job_needs_two_variants(sample, tmp_path, capsys):
    config = {"run_id": "ab-2", "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
              "output_uri": str(tmp_path / "runs"), "variants": [{"name": "only"}]}
    assert ab.main(["--config", _config(tmp_path, "ab", config)]) == 2
    assert "variants: an A/B run needs at least two variants (got 1)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_backfill_shards_are_disjoint_and_cover_the_catalogue(ray_local, sample, tmp_path):
    out = tmp_path / "runs"
    base = {"catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri, "output_uri": str(out),
            "pairing": {"strategy": "same_category", "scenes_per_product": 2},
            "model": {"source": "noop", "allow_random_weights": True}, **FAST,
            "selection": {"shard_count": 2}}
    keys = []
    for i in range(2):
        config = {**base, "run_id": f"bf-s{i}", "selection": {"shard_count": 2, "shard_index": i}}
        assert backfill.main(["--config", _config(tmp_path, f"bf{i}", config)]) == 0
        rows = _rows(out / f"bf-s{i}")
        assert rows and all(r["status"] == "ok" for r in rows)
        keys.append({(r["product_id"], r["scene_id"]) for r in rows})
        assert _summary(out / f"bf-s{i}")["selection"]["shard"] == {"index": i, "count": 2}
    manifests = load_manifests(sample.catalogue_uri, sample.scenes_uri, None)
    from pipeline.inference.config import PairingConfig

    full = make_pairs(manifests, PairingConfig(strategy="same_category", scenes_per_product=2), 0)
    everything = set(zip(full.column("product_id").to_pylist(), full.column("scene_id").to_pylist(), strict=True))
    assert not keys[0] & keys[1]
    assert keys[0] | keys[1] == everything
    # Shards split by product: all pairs of a product are in one shard.
    assert not {p for p, _ in keys[0]} & {p for p, _ in keys[1]}


def test_nightly_second_run_takes_only_new_and_changed_products(ray_local, sample, tmp_path):
    out = tmp_path / "runs"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    catalogue = pq.read_table(sample.catalogue_uri).slice(0, 4).to_pylist()
    cat_path = inputs / "catalogue.parquet"
    pq.write_table(pa.Table.from_pylist(catalogue), cat_path)
    base = {"catalogue_uri": str(cat_path), "scenes_uri": sample.scenes_uri, "output_uri": str(out),
            "pairing": {"strategy": "same_category", "scenes_per_product": 1},
            "model": {"source": "noop", "allow_random_weights": True}, **FAST}

    assert nightly.main(["--config", _config(tmp_path, "n1", {**base, "run_id": "n1"})]) == 0
    first = _rows(out / "n1")
    assert {r["product_id"] for r in first} == {c["product_id"] for c in catalogue}  # first nightly: everything
    assert _summary(out / "n1")["selection"]["incremental"] is True

    # Overnight: one product's image changes (new URI), one product is added, two stay as they were.
    changed = catalogue[1]
    new_image = inputs / "changed.jpg"
    shutil.copy(changed["image_uri"], new_image)
    changed["image_uri"] = str(new_image)
    added = pq.read_table(sample.catalogue_uri).slice(4, 1).to_pylist()[0]
    pq.write_table(pa.Table.from_pylist([*catalogue, added]), cat_path)

    assert nightly.main(["--config", _config(tmp_path, "n2", {**base, "run_id": "n2"})]) == 0
    second = _rows(out / "n2")
    assert {r["product_id"] for r in second} == {changed["product_id"], added["product_id"]}
    assert {r["product_uri"] for r in second if r["product_id"] == changed["product_id"]} == {str(new_image)}
    selection = _summary(out / "n2")["selection"]
    assert (selection["earlier_finished_runs"], selection["selected_products"], selection["catalogue_products"]) == (
        1, 2, 5)

    # The same run again computes nothing (resume), and a third nightly finds nothing new.
    assert nightly.main(["--config", _config(tmp_path, "n2", {**base, "run_id": "n2"})]) == 0
    assert len(_rows(out / "n2")) == len(second)
    assert nightly.main(["--config", _config(tmp_path, "n3", {**base, "run_id": "n3"})]) == 0
    assert _summary(out / "n3")["pairs"] == 0 and _summary(out / "n3")["selection"]["selected_products"] == 0
