"""Jobs submitted with `ray job submit` / `python -m jobs.submit` to a real two-node Ray cluster, on moto S3.

The cluster (system/cluster/_cluster.py) has a CPU-0 head with the dashboard and job server, and one worker node with
2 CPUs and 1 fake GPU, so the placement rules of ray_cluster.yaml hold in miniature: drivers on the head, every task
and actor on the worker, inference actors only where there is a GPU. The job's code and config travel in the job's
working directory, as with infra/runtime_env.yaml; the dummy AWS credentials of the moto server travel in the job's
runtime environment (test-only values).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline.core.storage import S3Config
from pipeline.synthetic.samples import write_sample_set

from ._cluster import DashboardCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def cluster():
    c = DashboardCluster()
    try:
        yield c.start()
    finally:
        c.shutdown()
        shutil.rmtree(c.temp_dir, ignore_errors=True)


@pytest.fixture
def job_dir(tmp_path):
    """What `ray job submit` uploads: the code (as infra/runtime_env.yaml would) and the job's config files."""
    work = tmp_path / "work"
    for package in ("pipeline", "jobs"):
        shutil.copytree(REPO / package, work / package, ignore=shutil.ignore_patterns("__pycache__"))
    runtime_env = {"working_dir": str(work), "excludes": ["__pycache__"], "env_vars": DUMMY_AWS}
    (tmp_path / "runtime_env.yaml").write_text(yaml.safe_dump(runtime_env))
    return work


def _job_config(s3_server: str, bucket: str, run_id: str, **extra) -> dict:
    sample = write_sample_set(f"s3://{bucket}/inputs", n_products=3, n_scenes=2, scene_size=(160, 120),
                              s3=S3Config(endpoint_url=s3_server, region="us-east-1"))
    return {
        "run_id": run_id, "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
        "output_uri": f"s3://{bucket}/runs", "pairing": {"strategy": "same_category", "scenes_per_product": 1},
        "model": {"source": "tiny", "allow_random_weights": True}, "sampling": {"steps": 2, "resolution": 64},
        "output": {"format": "png"},
        # The worker node has 2 CPUs: one for the inference actor (with the GPU), one for the CPU tasks.
        "compute": {"batch_size": 2, "cpus_per_actor": 1, "cpus_per_task": 1},
        "s3": {"endpoint_url": s3_server, "region": "us-east-1"}, "progress_interval_s": 2, **extra,
    }


def _s3fs(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


def _submit_tool(cluster: DashboardCluster, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.submit", *args, "--address", cluster.dashboard,
           "--runtime-env", str(tmp_path / "runtime_env.yaml")]
    return subprocess.run(cmd, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=300)


_WAIT = """
import json, sys, time
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[3])
while not (info := client.get_job_info(sys.argv[2])).status.is_terminal() and time.monotonic() < deadline:
    time.sleep(1)
print(json.dumps({"status": str(info.status), "message": info.message, "job_id": info.job_id}))
"""


def _wait_terminal(cluster: DashboardCluster, submission_id: str, timeout: float = 180) -> dict:
    """The job's final details, from Ray's job API (in a subprocess with the cluster's environment)."""
    out = subprocess.run([sys.executable, "-c", _WAIT, cluster.dashboard, submission_id, str(timeout)],
                         env=cluster.env, capture_output=True, text=True, timeout=timeout + 60)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_nightly_via_ray_job_submit_runs_inference_on_the_gpu_node(cluster, job_dir, tmp_path, s3_server, s3_bucket):
    config = _job_config(s3_server, s3_bucket, "nightly-2026-11-25")
    (job_dir / "nightly.yaml").write_text(yaml.safe_dump(config))
    submission_id = "nightly-nightly-2026-11-25"  # <job>-<run_id>, as jobs.submit computes it
    out = cluster.ray("job", "submit", "--address", cluster.dashboard, "--submission-id", submission_id,
                      "--runtime-env", str(tmp_path / "runtime_env.yaml"),
                      "--", "python", "-m", "jobs.nightly", "--config", "nightly.yaml", timeout=400)
    logs = cluster.ray("job", "logs", "--address", cluster.dashboard, submission_id).stdout
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-3000:]}\n{logs[-4000:]}"
    assert f"Job '{submission_id}' succeeded" in out.stdout + out.stderr
    assert '"by_status"' in logs  # the driver's summary, through `ray job logs`

    nodes = cluster.nodes_info()
    gpu_nodes = [n["node_id"] for n in nodes if n["resources_total"].get("GPU", 0) > 0]
    head = [n["node_id"] for n in nodes if n["is_head_node"]]
    assert len(gpu_nodes) == 1 and len(head) == 1 and head != gpu_nodes

    fs = _s3fs(s3_server)
    run = f"{s3_bucket}/runs/nightly-2026-11-25"
    rows = pq.read_table(f"{run}/metadata", filesystem=fs).to_pylist()
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), rows
    assert {r["inference_node"] for r in rows} == set(gpu_nodes)  # every pair inferred on the GPU node
    for r in rows:
        assert r["output_uri"] == f"s3://{run}/images/default/{r['product_id']}/{r['scene_id']}.png"
        image = Image.open(io.BytesIO(fs.cat(r["output_uri"])))
        assert image.size == (160, 120) == (r["scene_width"], r["scene_height"])
        assert np.asarray(image).ndim == 3
    summary = json.loads(fs.cat(f"{run}/summary.json"))
    assert summary["by_status"] == {"ok": 3, "failed": 0} and summary["selection"]["incremental"] is True
    assert json.loads(fs.cat(f"{run}/config.json"))["run_id"] == "nightly-2026-11-25"
    assert "testing" not in json.dumps(summary)

    # The same nightly again through jobs.submit: same submission id, refused by the cluster, exit status 2.
    again = _submit_tool(cluster, tmp_path, "nightly", "--config", str(job_dir / "nightly.yaml"))
    assert again.returncode == 2, again.stdout + again.stderr
    assert f"refused submission id {submission_id}" in again.stderr
    assert len(pq.read_table(f"{run}/metadata", filesystem=fs)) == 3  # nothing ran twice


def test_invalid_config_fails_before_any_gpu_is_requested(cluster, job_dir, tmp_path, s3_server, s3_bucket):
    config = _job_config(s3_server, s3_bucket, "bad-1")
    (job_dir / "bad.yaml").write_text(yaml.safe_dump(config))
    submission_id = "nightly-bad-1"
    out = cluster.ray("job", "submit", "--address", cluster.dashboard, "--submission-id", submission_id, "--no-wait",
                      "--runtime-env", str(tmp_path / "runtime_env.yaml"), "--", "python", "-m", "jobs.nightly",
                      "--config", "bad.yaml", "--set", "sampling.steps=0", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    info = _wait_terminal(cluster, submission_id)
    assert info["status"] == "FAILED"
    assert "exit code 2" in (info["message"] or ""), info
    # The driver never connected to Ray (no Ray job id was ever assigned), so it requested no GPU, CPU or actor.
    assert info["job_id"] is None, info
    logs = cluster.ray("job", "logs", "--address", cluster.dashboard, submission_id, check=True).stdout
    assert "sampling.steps: Input should be greater than or equal to 1 (got 0)" in logs, logs
    assert not _s3fs(s3_server).exists(f"{s3_bucket}/runs/bad-1")


def test_submit_tool_submits_a_backfill_shard_and_refuses_it_twice(cluster, job_dir, tmp_path, s3_server, s3_bucket):
    config = _job_config(s3_server, s3_bucket, "backfill-s1", model={"source": "noop", "allow_random_weights": True},
                         selection={"shard_count": 2, "shard_index": 1})
    (job_dir / "backfill.yaml").write_text(yaml.safe_dump(config))
    first = _submit_tool(cluster, tmp_path, "backfill", "--config", str(job_dir / "backfill.yaml"), "--wait")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
    assert "submitted backfill-backfill-s1: python -m jobs.backfill --config backfill.yaml" in first.stdout
    assert "job backfill-backfill-s1: SUCCEEDED" in first.stdout
    summary = json.loads(_s3fs(s3_server).cat(f"{s3_bucket}/runs/backfill-s1/summary.json"))
    assert summary["selection"]["shard"] == {"index": 1, "count": 2} and summary["by_status"]["failed"] == 0

    second = _submit_tool(cluster, tmp_path, "backfill", "--config", str(job_dir / "backfill.yaml"))
    assert second.returncode == 2
    assert "refused submission id backfill-backfill-s1" in second.stderr
    # Continuing the run is a new attempt, allowed once the first has ended; it finds every pair done.
    third = _submit_tool(cluster, tmp_path, "backfill", "--config", str(job_dir / "backfill.yaml"), "--attempt", "2",
                         "--wait")
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "job backfill-backfill-s1-2: SUCCEEDED" in third.stdout
    assert '"pairs": 0' in third.stdout  # this_attempt computed nothing again
