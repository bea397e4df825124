import pyarrow as pa

from pipeline.inference.config import PairingConfig
from pipeline.inference.manifests import Manifests
from pipeline.inference.pairing import PAIR_SCHEMA, make_pairs, pair_seed


def _manifests(pairs=None, order=1):
    products = [f"p{i}" for i in range(20)][::order]
    scenes = [f"s{i}" for i in range(10)][::order]
    catalogue = pa.table({"product_id": products, "image_uri": [f"u/{p}" for p in products],
                          "category": ["a" if int(p[1:]) % 2 else "b" for p in products],
                          "updated_at": pa.nulls(len(products), pa.string())})
    scene_table = pa.table({
        "scene_id": scenes, "image_uri": [f"u/{s}" for s in scenes],
        "mask_uri": [None if int(s[1:]) % 2 else f"m/{s}" for s in scenes],
        "x0": [1.0] * 10, "y0": [2.0] * 10, "x1": [30.0] * 10, "y1": [40.0] * 10,
        "category": ["a" if int(s[1:]) < 5 else "b" for s in scenes],
    })
    return Manifests(catalogue, scene_table, pairs)


def test_same_category_pairs_are_stable_and_order_independent():
    cfg = PairingConfig(strategy="same_category", scenes_per_product=2)
    first = make_pairs(_manifests(), cfg, run_seed=7)
    again = make_pairs(_manifests(order=-1), cfg, run_seed=7)
    def key(t):
        return sorted(zip(t["product_id"].to_pylist(), t["scene_id"].to_pylist(), t["seed"].to_pylist(), strict=True))

    assert key(first) == key(again)
    assert first.schema == PAIR_SCHEMA
    assert first.num_rows == 40
    cats = {p: ("a" if int(p[1:]) % 2 else "b") for p in first["product_id"].to_pylist()}
    for pid, sid in zip(first["product_id"].to_pylist(), first["scene_id"].to_pylist(), strict=True):
        assert ("a" if int(sid[1:]) < 5 else "b") == cats[pid]


def test_salt_changes_choice_and_k_is_respected():
    a = make_pairs(_manifests(), PairingConfig(scenes_per_product=1, salt="x"), 0)
    b = make_pairs(_manifests(), PairingConfig(scenes_per_product=1, salt="y"), 0)
    assert a["scene_id"].to_pylist() != b["scene_id"].to_pylist()
    assert a.num_rows == 20


def test_box_only_for_scenes_without_mask():
    t = make_pairs(_manifests(), PairingConfig(strategy="all"), 0).to_pylist()
    assert len(t) == 200
    for row in t:
        assert (row["mask_uri"] is None) == (row["box"] == "1.0,2.0,30.0,40.0")


def test_explicit_pairs_keep_given_seed_and_variant():
    pairs = pa.table({"product_id": ["p1", "p2"], "scene_id": ["s1", "s2"], "variant": ["A", "default"],
                      "seed": pa.array([123, None], pa.int64())})
    t = make_pairs(_manifests(pairs), PairingConfig(strategy="pairs"), 5).to_pylist()
    assert (t[0]["variant"], t[0]["seed"]) == ("A", 123)
    assert t[1]["seed"] == pair_seed(5, "p2", "s2")


def test_seed_ignores_variant_and_depends_on_run_seed():
    assert pair_seed(1, "p", "s") == pair_seed(1, "p", "s")
    assert pair_seed(1, "p", "s") != pair_seed(2, "p", "s")
    assert 0 <= pair_seed(1, "p", "s") < 2**31


def test_the_runner_streams_a_scenes_pairs_side_by_side():
    """Pairs made product by product reach the stages scene by scene (the CPU stages reuse a scene between pairs)."""
    import pyarrow as pa

    from pipeline.inference.planning import order_by_scene

    pairs = pa.table({"product_id": ["p2", "p1", "p2", "p1", "p3"], "scene_id": ["s2", "s1", "s1", "s2", "s1"],
                      "seed": [1, 2, 3, 4, 5]})
    ordered = order_by_scene(pairs)
    assert ordered.column("scene_id").to_pylist() == ["s1", "s1", "s1", "s2", "s2"]
    assert ordered.column("product_id").to_pylist() == ["p1", "p2", "p3", "p1", "p2"]
    assert ordered.column("seed").to_pylist() == [2, 3, 5, 4, 1]  # rows move whole
