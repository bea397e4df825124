"""Security end to end: credentials never reach logs or outputs; hostile ids cannot leave the run's folder.

- The nightly job runs in its own process (with its own local Ray, whose logs are kept) under unique dummy AWS
  credentials, at DEBUG log level. Neither the secret key, the session token nor the access key id may appear in
  its stdout/stderr, in any Ray log file, or in any object it wrote (images, metadata, config.json, summary.json).
- On a local filesystem, where `..` and `/` would really move a path, ids built to escape write only inside the run
  folder; an id too long to be a file name fails its own pair with `write_error`, nothing else.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import nightly
from pipeline.core.storage import S3Config
from pipeline.synthetic.samples import parquet_bytes, write_sample_set

from ._support import s3_config, s3fs_for, write_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_credentials_never_logged_or_written(s3_server, s3_bucket, tmp_path):
    secrets = {
        "AWS_ACCESS_KEY_ID": f"AKIATRYALL{uuid.uuid4().hex[:10].upper()}",
        "AWS_SECRET_ACCESS_KEY": f"tryall-secret-{uuid.uuid4().hex}",
        "AWS_SESSION_TOKEN": f"tryall-token-{uuid.uuid4().hex}",
    }
    fs = s3fs_for(s3_server)
    sample = write_sample_set(f"s3://{s3_bucket}/inputs", n_products=2, n_scenes=2, scene_size=(160, 120),
                              s3=S3Config(**s3_config(s3_server)))
    catalogue = pq.read_table(sample.catalogue_uri.removeprefix("s3://"), filesystem=fs).to_pylist()
    catalogue.append({"product_id": "gone", "image_uri": f"s3://{s3_bucket}/inputs/gone.jpg", "category": "decor"})
    catalogue.append({"product_id": "forbidden", "image_uri": "s3://another-bucket/x.jpg", "category": "decor"})
    fs.pipe(sample.catalogue_uri, parquet_bytes(pa.Table.from_pylist(catalogue)))
    config = {
        "run_id": "secrets", "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
        "output_uri": f"s3://{s3_bucket}/runs", "pairing": {"strategy": "all"},
        "model": {"source": "noop", "allow_random_weights": True},
        "sampling": {"resolution": 64}, "compute": {"gpus_per_actor": 0}, "s3": s3_config(s3_server),
    }
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # short: Ray's sockets live under it
    env = {**os.environ, **secrets, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "jobs.nightly", "--config", write_config(tmp_path / "run.yaml", config),
             "--log-level", "DEBUG"], cwd=REPO, env=env, capture_output=True, timeout=240,
        )
        assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
        sources = {"stdout": out.stdout, "stderr": out.stderr}
        for path in Path(ray_tmp).rglob("*"):
            if path.is_file() and not path.is_symlink() and path.suffix not in (".sock",):
                with contextlib.suppress(OSError):
                    sources[str(path)] = path.read_bytes()
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
    written = [k for k in fs.find(f"{s3_bucket}/runs/secrets")]
    assert any(k.endswith("summary.json") for k in written) and any("/images/" in k for k in written)
    for key in written:
        sources[f"s3://{key}"] = fs.cat(key)
    assert len([s for s in sources if "/logs/" in s]) > 5, "the Ray logs were not found"
    assert len(out.stderr) > 10_000, "DEBUG logging should have produced a lot of output"

    leaks = [(name, where) for name, value in secrets.items() for where, data in sources.items()
             if value.encode() in data]
    assert not leaks, leaks


def test_hostile_ids_stay_inside_the_run_folder_on_disk(ray_local, tmp_path):
    sample = write_sample_set(str(tmp_path / "in"), n_products=1, n_scenes=1, scene_size=(160, 120))
    catalogue = pq.read_table(sample.catalogue_uri).to_pylist()
    image = catalogue[0]["image_uri"]
    hostile = ["../../../escaped", "..", ".", "/etc/passwd", "a/../../b", "~root", "..\\..\\win", "%2e%2e",
               "é" * 100]  # the last escapes to 600 characters: too long for one file name
    (tmp_path / "in" / "catalogue.parquet").write_bytes(parquet_bytes(pa.Table.from_pylist(
        [{"product_id": pid, "image_uri": image, "category": catalogue[0]["category"]} for pid in hostile])))
    out = tmp_path / "deep" / "out"
    config = {"run_id": "hostile", "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
              "output_uri": str(out), "pairing": {"strategy": "all"},
              "model": {"source": "noop", "allow_random_weights": True},
              "sampling": {"resolution": 64}}
    before = {p for p in tmp_path.rglob("*")}
    assert nightly.main(["--config", write_config(tmp_path / "run.yaml", config)]) == 0

    run = out / "hostile"
    created = {p for p in tmp_path.rglob("*")} - before - {tmp_path / "run.yaml"}
    outside = [p for p in created if run not in p.parents and p != run and p not in (out, out.parent)]
    assert not outside, outside
    rows = {r["product_id"]: r for r in pq.read_table(run / "metadata").to_pylist()}
    assert set(rows) == set(hostile)
    for pid in hostile[:-1]:
        assert rows[pid]["status"] == "ok", rows[pid]
        written = Path(rows[pid]["output_uri"])
        assert written.is_file() and written.resolve().parent.parent.parent == (run / "images").resolve()
    long = rows[hostile[-1]]
    assert (long["status"], long["error_reason"]) == ("failed", "write_error")
    assert "could not write" in long["error_message"] and "File name too long" in long["error_message"]
    assert not list(run.rglob(".tmp-*"))  # no temporary file left behind by the failed write
