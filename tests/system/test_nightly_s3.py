"""The main job end to end: moto S3 in, local Ray with a fake GPU, composited images and metadata out."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import s3fs
import yaml
from PIL import Image, ImageDraw, ImageFilter

from jobs import nightly
from pipeline.core.storage import S3Config
from pipeline.synthetic.samples import write_sample_set

pytestmark = pytest.mark.integration


def _mask_for(fs, scene: dict, size: tuple[int, int]) -> np.ndarray:
    if scene["mask_uri"]:
        return np.asarray(Image.open(io.BytesIO(fs.cat(scene["mask_uri"]))).convert("L")) >= 128
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle([scene["x0"], scene["y0"], scene["x1"] - 1, scene["y1"] - 1], fill=255)
    return np.asarray(mask) >= 128


def test_nightly_job_on_s3(ray_local, s3_server, s3_bucket, tmp_path):
    s3 = S3Config(endpoint_url=s3_server, region="us-east-1")
    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    sample = write_sample_set(f"s3://{s3_bucket}/inputs", n_products=3, n_scenes=4, s3=s3)
    # One product whose image is missing: it must end as a failed row, not fail the job.
    catalogue = pq.read_table(sample.catalogue_uri.removeprefix("s3://"), filesystem=fs).to_pylist()
    catalogue.append({"product_id": "ghost/..", "image_uri": f"s3://{s3_bucket}/inputs/none.jpg", "category": "decor"})
    import pyarrow as pa

    with fs.open(sample.catalogue_uri, "wb") as f:
        pq.write_table(pa.Table.from_pylist(catalogue), f)

    config = {
        "run_id": "nightly-test",
        "catalogue_uri": sample.catalogue_uri,
        "scenes_uri": sample.scenes_uri,
        "output_uri": f"s3://{s3_bucket}/runs",
        "pairing": {"strategy": "same_category", "scenes_per_product": 2},
        "model": {"source": "tiny", "allow_random_weights": True},
        "sampling": {"steps": 3, "resolution": 64},
        "output": {"format": "png"},
        "compute": {"batch_size": 2},
        "s3": {"endpoint_url": s3_server, "region": "us-east-1"},
    }
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(config))
    assert nightly.main(["--config", str(path)]) == 0

    run = f"{s3_bucket}/runs/nightly-test"
    rows = pq.read_table(f"{run}/metadata", filesystem=fs).to_pylist()
    expected = {(p, s) for p in [*sample.product_ids, "ghost/.."] for s in sample.scene_ids}
    keys = [(r["product_id"], r["scene_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == 8  # 4 products x 2 scenes of their category, one row each
    assert set(keys) <= expected

    scene_rows = pq.read_table(sample.scenes_uri.removeprefix("s3://"), filesystem=fs).to_pylist()
    scenes = {r["scene_id"]: r for r in scene_rows}
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["product_id"] for r in failed} == {"ghost/.."}
    assert {r["error_reason"] for r in failed} == {"fetch_missing"}
    assert len(ok) == 6
    for r in ok:
        assert r["output_uri"].startswith(f"s3://{run}/images/default/")
        out = np.asarray(Image.open(io.BytesIO(fs.cat(r["output_uri"]))).convert("RGB"))
        scene_img = Image.open(io.BytesIO(fs.cat(scenes[r["scene_id"]]["image_uri"]))).convert("RGB")
        assert out.shape == (scene_img.height, scene_img.width, 3) == (r["scene_height"], r["scene_width"], 3)
        mask = _mask_for(fs, scenes[r["scene_id"]], scene_img.size)
        dilate = 2 * (config.get("image", {}).get("dilate_px", 8) + 2) + 1  # square kernel: a superset of any
        dilated = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(dilate))) > 0
        assert np.array_equal(out[~dilated], np.asarray(scene_img)[~dilated])
        assert not np.array_equal(out[mask], np.asarray(scene_img)[mask])  # something was generated inside
        assert r["seed"] is not None and r["model_id"] == "tiny"

    summary = json.loads(fs.cat(f"{run}/summary.json"))
    assert summary["pairs"] == len(rows)
    assert summary["by_status"] == {"ok": 6, "failed": 2}
    assert summary["by_error_reason"] == {"fetch_missing": 2}
    written = json.loads(fs.cat(f"{run}/config.json"))
    assert written["run_id"] == "nightly-test" and "testing" not in json.dumps(written)

    # A rerun of the same run id computes nothing again and adds no row.
    assert nightly.main(["--config", str(path)]) == 0
    again = pq.read_table(f"{run}/metadata", filesystem=fs)
    assert again.num_rows == len(rows)
    assert json.loads(fs.cat(f"{run}/summary.json"))["this_attempt"]["pairs"] == 0
