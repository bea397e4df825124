"""`make demo` end to end: the demo job on a local Ray, with the packaged demo model, writes every image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_composites_every_pair_with_the_trained_model(tmp_path):
    # Ray's socket paths must stay under 107 bytes: a short folder of its own, not one under pytest's tmp_path.
    ray_dir = tempfile.mkdtemp(prefix="ray-demo-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_dir}
    out = tmp_path / "demo"
    try:
        done = subprocess.run([sys.executable, "-m", "jobs.demo", "--output-uri", str(out), "--products", "2",
                               "--scenes", "2"], env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (out / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pairs"] >= 2 and summary["by_status"] == {"ok": summary["pairs"], "failed": 0}
    assert summary["models"]["default"]["source"] == "demo"
    assert summary["models"]["default"]["hint_branch_trained"] is True
    assert len(list((run / "images" / "default").rglob("*.png"))) == summary["pairs"]
    # What a newcomer reads: tryall's own progress, not Ray Data's operator tables, and no deprecation of ours.
    assert f"progress: {summary['pairs']}/{summary['pairs']} pairs (100%), 0 failed" in done.stderr, done.stderr
    assert "Execution plan of Dataset" not in done.stderr and "Starting execution of Dataset" not in done.stderr
    assert "is deprecated" not in done.stderr, done.stderr
