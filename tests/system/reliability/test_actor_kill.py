"""An inference actor killed mid-run (SIGKILL of its process, as the OOM killer or a crashed CUDA context would):
Ray restarts it and retries its tasks (max_restarts=-1, max_task_retries=compute.max_task_retries), and the run
completes with every pair accounted for: none lost, none duplicated."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray

from jobs import nightly
from pipeline.core.storage import S3Config
from pipeline.synthetic.samples import write_sample_set

from ._support import TINY, accounting, read_json, read_rows, s3_config, s3fs_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _inference_actors() -> list[dict]:
    """This process's Ray Data workers of the Inference stage, from the GCS actor table (no dashboard needed)."""
    from ray._private import state

    job_id = ray.get_runtime_context().get_job_id()
    return [a for a in state.actors().values()
            if a["JobID"] == job_id and "MapWorker" in a["ActorClassName"] and "Inference" in a["ActorClassName"]]


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (100 per second), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_inference_actor_killed_mid_run(ray_local, s3_server, s3_bucket, tmp_path):
    s3 = S3Config(**s3_config(s3_server))
    fs = s3fs_for(s3_server)
    sample = write_sample_set(f"s3://{s3_bucket}/inputs", n_products=8, n_scenes=4, scene_size=(160, 120), s3=s3)
    expected = {(p, s, "default") for p in sample.product_ids for s in sample.scene_ids}
    config = {
        "run_id": "actor-kill", "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
        "output_uri": f"s3://{s3_bucket}/runs", "pairing": {"strategy": "all"}, **TINY,
        "compute": {"batch_size": 2}, "s3": s3_config(s3_server), "record": {"part_rows": 2},
    }
    run = f"{s3_bucket}/runs/actor-kill"
    killed: list[dict] = []
    errors: list[BaseException] = []

    def killer() -> None:
        """Once the first image is written and the actor is computing (its CPU time grows), SIGKILL its process."""
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                images = f"{run}/images"
                done = len(fs.find(images)) if fs.exists(images) else 0
                alive = [a for a in _inference_actors() if a["State"] == "ALIVE"]
                if done and alive and alive[0]["Pid"]:
                    pid = alive[0]["Pid"]
                    before = _cpu_ticks(pid)
                    time.sleep(0.1)
                    busy = _cpu_ticks(pid) - before
                    if busy >= 2:  # at least 20 ms of CPU in 100 ms: in the middle of a batch, not idle
                        os.kill(pid, signal.SIGKILL)
                        killed.append({**alive[0], "images_at_kill": done, "busy_ticks": busy,
                                       "rows_at_kill": len(read_rows(fs, run))})
                        return
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    started = time.monotonic()
    assert nightly.main(["--config", write_config(tmp_path / "run.yaml", config)]) == 0
    thread.join(5)
    assert not errors, errors
    assert killed, "no inference actor was killed"
    assert killed[0]["images_at_kill"] < len(expected), "the kill must land mid-run"

    rows = read_rows(fs, run)
    counted = accounting(rows, expected)
    assert counted == {"rows": len(expected), "lost": 0, "duplicated": 0, "unexpected": 0}, counted
    assert {r["status"] for r in rows} == {"ok"}  # the kill costs time, not pairs
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["pairs"] == summary["this_attempt"]["pairs"] == len(expected)
    actor = next(a for a in _inference_actors() if a["ActorID"] == killed[0]["ActorID"])
    assert actor["NumRestarts"] >= 1  # Ray restarted the killed actor
    k = killed[0]
    print(f"\nactor kill: pid {k['Pid']} killed busy ({k['busy_ticks']} CPU ticks in 0.1 s) with "
          f"{k['images_at_kill']} of {len(expected)} images written, "
          f"{k['rows_at_kill']} rows recorded; restarts {actor['NumRestarts']}; lost {counted['lost']}, "
          f"duplicated {counted['duplicated']}; {time.monotonic() - started:.1f}s")
