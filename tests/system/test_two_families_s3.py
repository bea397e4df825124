"""Both model families in one nightly on moto S3: the demo DTC and a tiny random FLUX.2 [klein] folder (public
layout, on S3, fetched through the node cache), with paired seeds, the metadata contract, resume, and the bad klein
folders that must stop the job before Ray Data starts."""

from __future__ import annotations

import io
import json
import shutil
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
import yaml
from PIL import Image

from jobs import nightly
from pipeline.core.storage import S3Config
from pipeline.inference.metadata_row import METADATA_SCHEMA
from pipeline.model.klein_build import build_tiny_klein, save_klein
from pipeline.synthetic.samples import write_sample_set

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def klein_folder(tmp_path_factory):
    return save_klein(build_tiny_klein(), tmp_path_factory.mktemp("klein") / "klein")


def _upload(fs: s3fs.S3FileSystem, local, prefix: str) -> str:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://{prefix}"


def _config(tmp_path, s3_server, sample, bucket, klein_uri, run_id="two-families") -> str:
    config = {
        "run_id": run_id,
        "catalogue_uri": sample.catalogue_uri,
        "scenes_uri": sample.scenes_uri,
        "output_uri": f"s3://{bucket}/runs",
        "pairing": {"strategy": "same_category", "scenes_per_product": 1},
        "variants": [
            {"name": "dtc", "model": {"source": "demo"}},
            {"name": "klein", "model": {"source": klein_uri, "cache_dir": str(tmp_path / "cache")},
             # A folder's crop size is klein's 1024 px unless set: this tiny one works at 64.
             "sampling": {"prompt": "a {category} called {title}", "resolution": 64, "reference_size": 64}},
        ],
        "output": {"format": "png"},
        "compute": {"batch_size": 2},
        "s3": {"endpoint_url": s3_server, "region": "us-east-1"},
    }
    path = tmp_path / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_nightly_with_the_demo_dtc_and_a_klein_folder_on_s3(ray_local, s3_server, s3_bucket, klein_folder,
                                                               tmp_path):
    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    s3 = S3Config(endpoint_url=s3_server, region="us-east-1")
    sample = write_sample_set(f"s3://{s3_bucket}/inputs", n_products=3, n_scenes=2, s3=s3)
    catalogue = pq.read_table(sample.catalogue_uri.removeprefix("s3://"), filesystem=fs)
    titled = catalogue.append_column("title", pa.array([f"item {i}" for i in range(catalogue.num_rows)]))
    with fs.open(sample.catalogue_uri, "wb") as f:
        pq.write_table(titled, f)
    klein_uri = _upload(fs, klein_folder, f"{s3_bucket}/models/klein")
    config = _config(tmp_path, s3_server, sample, s3_bucket, klein_uri)
    assert nightly.main(["--config", config]) == 0

    run = f"{s3_bucket}/runs/two-families"
    table = pq.read_table(f"{run}/metadata", filesystem=fs)
    assert table.schema.names == METADATA_SCHEMA.names
    rows = table.to_pylist()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    by_pair: dict = {}
    for r in rows:
        by_pair.setdefault((r["product_id"], r["scene_id"]), {})[r["variant"]] = r
    titles = dict(zip(titled.column("product_id").to_pylist(), titled.column("title").to_pylist(), strict=True))
    categories = dict(zip(titled.column("product_id").to_pylist(), titled.column("category").to_pylist(),
                          strict=True))
    for (product, _), variants in by_pair.items():
        dtc, klein = variants["dtc"], variants["klein"]
        assert dtc["seed"] == klein["seed"]  # paired
        assert (dtc["model_family"], klein["model_family"]) == ("dtc", "flux2-klein")
        # Each model's own defaults: the demo's 64 px, 20 steps, guidance 2; a distilled klein's 4 steps.
        assert (dtc["resolution"], dtc["steps"], dtc["guidance"], dtc["scheduler"]) == (64, 20, 2.0, "ddim")
        assert (klein["resolution"], klein["steps"], klein["scheduler"]) == (64, 4, "flow_match_euler")
        assert dtc["prompt"] is None
        assert klein["prompt"] == f"a {categories[product]} called {titles[product]}"
        assert klein["model_id"] == klein_uri
        for r in (dtc, klein):
            assert r["output_uri"].startswith(f"s3://{run}/images/{r['variant']}/")
            image = Image.open(io.BytesIO(fs.cat(r["output_uri"])))
            assert image.size == (r["scene_width"], r["scene_height"])
        assert not np.array_equal(np.asarray(Image.open(io.BytesIO(fs.cat(dtc["output_uri"])))),
                                  np.asarray(Image.open(io.BytesIO(fs.cat(klein["output_uri"])))))
    summary = json.loads(fs.cat(f"{run}/summary.json"))
    assert summary["by_variant"] == {"dtc": {"ok": 3, "failed": 0}, "klein": {"ok": 3, "failed": 0}}
    assert summary["models"]["klein"]["family"] == "flux2-klein"
    assert summary["models"]["dtc"]["family"] == "dtc" and summary["models"]["dtc"]["hint_branch_trained"] is True
    recorded = json.loads(fs.cat(f"{run}/config.json"))
    assert recorded["variants"][1]["model"]["family"] == "flux2-klein"
    assert recorded["variants"][1]["sampling"]["steps"] == 4

    # A rerun of the run id computes nothing and keeps exactly one row per pair and variant.
    assert nightly.main(["--config", config]) == 0
    again = json.loads(fs.cat(f"{run}/summary.json"))
    assert again["this_attempt"]["pairs"] == 0 and again["pairs"] == 6


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda root: shutil.rmtree(root / "vae"), "the vae/ folder is missing or empty"),
    (lambda root: (root / "transformer" / "diffusion_pytorch_model.safetensors").rename(
        root / "transformer" / "diffusion_pytorch_model.bin"), "is a pickle-format checkpoint"),
    (lambda root: (root / "model_index.json").write_text(json.dumps({"_class_name": "QwenImageEditPipeline"})),
     "names 'QwenImageEditPipeline', which tryall does not run"),
])
def test_a_bad_klein_folder_exits_2_before_ray_data(s3_server, s3_bucket, klein_folder, tmp_path, capsys, damage,
                                                    reason):
    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    s3 = S3Config(endpoint_url=s3_server, region="us-east-1")
    sample = write_sample_set(f"s3://{s3_bucket}/inputs", n_products=1, n_scenes=1, s3=s3)
    bad = tmp_path / "bad"
    shutil.copytree(klein_folder, bad)
    damage(bad)
    case = uuid.uuid4().hex[:8]  # the parametrized cases share a bucket (its name is cut from the test's)
    uri = _upload(fs, bad, f"{s3_bucket}/models/bad-{case}")
    assert nightly.main(["--config", _config(tmp_path, s3_server, sample, s3_bucket, uri, run_id=f"bad-{case}")]) == 2
    err = capsys.readouterr().err
    assert "variants.klein.model.source" in err and reason in err
    assert not fs.exists(f"{s3_bucket}/runs/bad-{case}/metadata")
