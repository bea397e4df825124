"""The GPU node of a multi-node cluster is lost mid-run, then a new GPU node joins.

The cluster is system/cluster's (a CPU-0 head, `ray start --head --num-cpus 0 --num-gpus 0`, and one 2-CPU/1-GPU worker
node, `ray start --address ... --num-gpus 1`), with fast node-death detection. The nightly job's driver is a separate
process on the head, as under `ray job submit`. Once the first image is written, the worker node's whole process
group (its raylet, object store, the inference actor and the CPU tasks) is SIGKILLed. A new GPU node joins a few
seconds later. Ray restarts the actor there, retries its tasks and rebuilds lost blocks; if the job
failed instead, it is submitted again with the same run id (resume). Either way every pair ends with exactly one row.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.storage import S3Config
from pipeline.synthetic.samples import write_sample_set
from tests.system.cluster._cluster import DashboardCluster

from ._support import TINY, accounting, read_json, read_rows, s3_config, s3fs_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
# Fast node-death detection (the default takes ~30 s): the GCS checks each raylet every 500 ms, dead after 4 misses.
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
               "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "4"}


class GpuNodeCluster(DashboardCluster):
    """tests/system/cluster's two-node cluster, plus losing GPU nodes and adding new ones."""

    def __init__(self) -> None:
        super().__init__()
        self.env.update(FAST_HEALTH)
        self.env["PYTHONPATH"] = str(REPO)  # the workers import the pipeline as the image's would

    def add_gpu_node(self) -> subprocess.Popen:
        self._start(f"gpu{len(self.nodes)}", [f"--address={self.address}", "--num-cpus=2", "--num-gpus=1"])
        return self.nodes[-1]

    def kill_node(self, proc: subprocess.Popen) -> None:
        """SIGKILL the node's process group (its `ray start` runs in a session of its own), as a lost machine."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def wait_alive(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len([n for n in self.nodes_info() if n.get("state") == "ALIVE"]) != count:
            assert time.monotonic() < deadline, f"not {count} alive nodes after {timeout}s: {self.log_tail()}"
            time.sleep(0.5)


def test_gpu_node_killed_mid_run(s3_server, s3_bucket, tmp_path):
    fs = s3fs_for(s3_server)
    sample = write_sample_set(f"s3://{s3_bucket}/inputs", n_products=8, n_scenes=4, scene_size=(160, 120),
                              s3=S3Config(**s3_config(s3_server)))
    expected = {(p, s, "default") for p in sample.product_ids for s in sample.scene_ids}
    config = {
        "run_id": "node-kill", "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
        "output_uri": f"s3://{s3_bucket}/runs", "pairing": {"strategy": "all"}, **TINY,
        "compute": {"batch_size": 2}, "s3": s3_config(s3_server), "record": {"part_rows": 4},
    }
    path = write_config(tmp_path / "run.yaml", config)
    run = f"{s3_bucket}/runs/node-kill"

    cluster = GpuNodeCluster()
    drivers: list[int] = []
    try:
        cluster.start()
        gpu = cluster.nodes[1]

        def submit() -> subprocess.Popen:
            env = {**cluster.env, "RAY_ADDRESS": cluster.address}
            log = open(tmp_path / f"driver-{len(drivers)}.log", "wb")  # noqa: SIM115 - closed with the process
            return subprocess.Popen([sys.executable, "-m", "jobs.nightly", "--config", path], cwd=REPO, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)

        driver = submit()
        images = f"{run}/images"
        deadline = time.monotonic() + 120
        while not (fs.exists(images) and fs.find(images)):
            assert driver.poll() is None, (tmp_path / "driver-0.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no image within 120 s"
            time.sleep(0.1)
        at_kill = len(fs.find(images))
        killed_at = time.monotonic()
        cluster.kill_node(gpu)
        cluster.wait_alive(1)
        time.sleep(3)  # the run waits without a GPU node for a while
        cluster.add_gpu_node()
        cluster.wait_alive(2)
        try:
            drivers.append(driver.wait(150))
        except subprocess.TimeoutExpired:
            driver.kill()
            drivers.append(driver.wait())
        if drivers[-1] != 0:  # the job failed: resubmit it with the same run id, which resumes
            driver = submit()
            drivers.append(driver.wait(150))
        recovered = time.monotonic() - killed_at
    finally:
        cluster.shutdown()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)

    logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("driver-*.log")))
    assert drivers[-1] == 0, logs
    assert at_kill < len(expected), "the kill must land mid-run"
    rows = read_rows(fs, run)
    counted = accounting(rows, expected)
    assert counted == {"rows": len(expected), "lost": 0, "duplicated": 0, "unexpected": 0}, counted
    assert {r["status"] for r in rows} == {"ok"}, [r["error_message"] for r in rows if r["status"] != "ok"]
    assert read_json(fs, f"{run}/summary.json")["pairs"] == len(expected)
    print(f"\ngpu node kill: {at_kill} of {len(expected)} images written at the kill; driver exit codes {drivers} "
          f"({'completed in the same submission' if len(drivers) == 1 else 'completed after resubmission'}); "
          f"{recovered:.1f}s from kill to finish; lost {counted['lost']}, duplicated {counted['duplicated']}")
