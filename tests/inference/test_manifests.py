import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.inference import manifests
from pipeline.inference.manifests import ManifestError, load_manifests


def _write(path, table):
    pq.write_table(table, path)
    return str(path)


@pytest.fixture
def good(tmp_path):
    cat = _write(tmp_path / "c.parquet", pa.table({"product_id": ["p1", "p2"], "image_uri": ["a", "b"],
                                                   "category": ["x", None], "extra": [1, 2]}))
    scn = _write(tmp_path / "s.parquet", pa.table({"scene_id": ["s1", "s2"], "image_uri": ["c", "d"],
                                                   "mask_uri": ["m", None], "x0": [None, 1], "y0": [None, 2],
                                                   "x1": [None, 3], "y1": [None, 4]}))
    return tmp_path, cat, scn


def test_valid_manifests_keep_contract_columns_only(good):
    _, cat, scn = good
    m = load_manifests(cat, scn, None)
    assert m.catalogue.column_names == ["product_id", "image_uri", "category", "updated_at", "title"]
    assert m.scenes.column("category").null_count == 2  # optional column filled with nulls
    assert m.pairs is None


def test_every_problem_is_reported_in_one_error(tmp_path, good):
    _, _, scn = good
    cat = _write(tmp_path / "bad_c.parquet", pa.table({"product_id": ["p1", "p1", "p2"], "category": ["a", "b", "c"]}))
    bad_scenes = _write(tmp_path / "bad_s.parquet", pa.table({"scene_id": [1, 2], "image_uri": ["a", "b"]}))
    pairs = _write(tmp_path / "p.parquet", pa.table({"product_id": ["p1"], "scene_id": ["nope"]}))
    with pytest.raises(ManifestError) as info:
        load_manifests(cat, bad_scenes, pairs)
    text = str(info.value)
    assert "catalogue manifest: required column 'image_uri' is missing" in text
    assert "scenes manifest: column 'scene_id' has type int64, expected string" in text
    # The pairs manifest is still checked for its own problems (unknown scene against a usable scenes table
    # is not knowable here, but the report above already holds the two other manifests' problems).
    assert text.count("  - ") >= 2


def test_duplicates_empty_and_unknown_ids(tmp_path):
    cat = _write(tmp_path / "c.parquet", pa.table({"product_id": ["p1", "p1"], "image_uri": ["a", "b"]}))
    empty = _write(tmp_path / "s.parquet", pa.table({"scene_id": pa.array([], pa.string()),
                                                     "image_uri": pa.array([], pa.string())}))
    with pytest.raises(ManifestError) as info:
        load_manifests(cat, empty, None)
    assert "duplicate product_id values: 'p1'" in str(info.value)
    assert "scenes manifest: is empty" in str(info.value)


def test_pairs_naming_unknown_ids_and_duplicates(good):
    tmp_path, cat, scn = good
    pairs = _write(
        tmp_path / "p.parquet", pa.table({"product_id": ["p1", "p9", "p1"], "scene_id": ["s1", "s1", "s1"]})
    )
    with pytest.raises(ManifestError) as info:
        load_manifests(cat, scn, pairs)
    text = str(info.value)
    assert "1 pairs name product_id values not in the catalogue: 'p9'" in text
    assert "duplicate (product_id, scene_id, variant): 'p1/s1/default'" in text


def test_unknown_ids_report_every_pair_and_the_first_names_across_batches(good, monkeypatch):
    """Unknown ids are counted in pairs and shown by their first names in sorted order, batch after batch: the
    report holds a few names, not every unknown id of the manifest."""
    tmp_path, cat, scn = good
    monkeypatch.setattr(manifests, "PAIRS_BATCH_ROWS", 3)
    products = ["q9", "q1", "p1", "q7", "q1", "q0", "q5", "q3", "q8", "q2"]  # q6, q4 never named
    pairs = _write(tmp_path / "p.parquet", pa.table({"product_id": products, "scene_id": [f"s{i % 2 + 1}" for i in
                                                                                         range(10)]}))
    with pytest.raises(ManifestError) as info:
        load_manifests(cat, scn, pairs)
    assert "9 pairs name product_id values not in the catalogue: 'q0', 'q1', 'q2', 'q3', 'q5' and others" in str(
        info.value)
    few = _write(tmp_path / "few.parquet", pa.table({"product_id": ["q2", "q1", "q2"], "scene_id": ["s1"] * 3}))
    with pytest.raises(ManifestError, match=r"(?m)3 pairs name product_id values not in the catalogue: 'q1', 'q2'$"):
        load_manifests(cat, scn, few)


def test_scene_without_region_and_unreadable_files(tmp_path, good):
    _, cat, _ = good
    scn = _write(tmp_path / "s2.parquet", pa.table({"scene_id": ["s1"], "image_uri": ["c"], "x0": [1]}))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(ManifestError) as info:
        load_manifests(cat, scn, str(junk))
    assert "neither mask_uri nor a full x0,y0,x1,y1 box: 's1'" in str(info.value)
    assert "cannot be read as Parquet" in str(info.value)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifests(str(tmp_path / "missing.parquet"), scn, None)


def test_null_required_values(tmp_path, good):
    _, _, scn = good
    cat = _write(tmp_path / "c.parquet", pa.table({"product_id": ["p1", ""], "image_uri": ["a", None]}))
    with pytest.raises(ManifestError) as info:
        load_manifests(cat, scn, None)
    assert "column 'product_id' has 1 null or empty values" in str(info.value)
    assert "column 'image_uri' has 1 null or empty values" in str(info.value)


def test_the_pairs_manifest_is_checked_batch_by_batch(good, monkeypatch):
    """Problems across batch boundaries are found as in one table: duplicates split over batches, unknown variants."""
    from pipeline.inference import manifests

    monkeypatch.setattr(manifests, "PAIRS_BATCH_ROWS", 2)
    tmp_path, cat, scn = good
    pairs = _write(tmp_path / "p.parquet", pa.table({
        "product_id": ["p1", "p2", "p2", "p1", "p1", "p2", "p2"],
        "scene_id": ["s1", "s1", "s2", "s2", "s1", "s2", "s1"],
        "variant": pa.array([None, "a", None, "zz", "default", None, "b"], pa.string()),
    }))
    with pytest.raises(ManifestError) as info:
        load_manifests(cat, scn, pairs, variants=["a", "b"])
    text = str(info.value)
    assert "2 duplicate (product_id, scene_id, variant): 'p1/s1/default', 'p2/s2/default'" in text
    assert "variant values ['zz'] are not among the configured variants ['a', 'b']" in text
    assert load_manifests(cat, scn, _write(tmp_path / "ok.parquet", pa.table({
        "product_id": ["p1", "p2"], "scene_id": ["s1", "s1"]}))).pairs_uri == str(tmp_path / "ok.parquet")
