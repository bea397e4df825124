"""Resume after a realistic interruption: the nightly job's driver is SIGKILLed once its first metadata part is
written, then the same run id is run again.

The rerun computes only what has no row (its `this_attempt.pairs` says how many), leaves the rows and images of
finished pairs untouched (same finished_at, same LastModified), and every pair ends with exactly one row. Failed
pairs are computed again only with retry_failed. Every part a reader can see is a whole Parquet file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import nightly
from pipeline.core.storage import S3Config
from pipeline.synthetic.samples import parquet_bytes, write_sample_set

from ._s3proxy import FlakyS3Proxy
from ._support import TINY, accounting, part_files, read_json, read_rows, s3_config, s3fs_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]


def _image_times(fs, rows: list[dict]) -> dict[str, object]:
    return {r["output_uri"]: fs.info(r["output_uri"])["LastModified"] for r in rows if r["status"] == "ok"}


def test_resume_after_sigkill_computes_only_what_is_not_done(ray_local, s3_server, s3_bucket, tmp_path):
    with contextlib.ExitStack() as stack:
        _resume(stack, ray_local, s3_server, s3_bucket, tmp_path)


def _resume(stack, ray_local, s3_server, s3_bucket, tmp_path):
    s3 = S3Config(**s3_config(s3_server))
    fs = s3fs_for(s3_server)
    sample = write_sample_set(f"s3://{s3_bucket}/inputs", n_products=8, n_scenes=4, scene_size=(160, 120), s3=s3)
    # One product whose image does not exist yet: a failed row, retried only when asked.
    catalogue = pq.read_table(sample.catalogue_uri.removeprefix("s3://"), filesystem=fs).to_pylist()
    late_uri = f"s3://{s3_bucket}/inputs/products/late.jpg"
    catalogue.append({"product_id": "late", "image_uri": late_uri, "category": "decor"})
    fs.pipe(sample.catalogue_uri, parquet_bytes(pa.Table.from_pylist(catalogue)))
    total = len(catalogue) * len(sample.scene_ids)
    expected = {(r["product_id"], s, "default") for r in catalogue for s in sample.scene_ids}

    # S3 answers metadata PUTs 1 s late (a slow store): on 2 cores the rows reach the driver close together at
    # the end of the run, and this keeps the parts apart in time, so the kill lands after the first part and
    # before the last one however loaded the machine is.
    proxy = stack.enter_context(
        FlakyS3Proxy(s3_server, fault_requests=0, delay_puts_to=("/runs/resume/metadata/",), delay_s=1.0))
    config = {
        "run_id": "resume", "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
        "output_uri": f"s3://{s3_bucket}/runs", "pairing": {"strategy": "all"}, **TINY,
        "output": {"format": "png"}, "compute": {"batch_size": 2}, "s3": s3_config(proxy.url),
        "record": {"part_rows": 2},
    }
    path = write_config(tmp_path / "resume.yaml", config)
    run = f"{s3_bucket}/runs/resume"

    # The driver in its own process, connected to the running cluster as `ray job submit` would run it.
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO)}
    log = (tmp_path / "driver.log").open("wb")
    driver = subprocess.Popen([sys.executable, "-m", "jobs.nightly", "--config", path], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not part_files(fs, run):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no metadata part within 90 s"
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.wait(30) == -signal.SIGKILL
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        log.close()
    time.sleep(1.5)  # anything the dead driver's tasks still write lands now, before the snapshot

    # What the interrupted attempt left: whole parts only, some rows, no summary.
    parts = part_files(fs, run)
    assert parts and all("/.tmp-" not in p for p in parts)
    for p in parts:
        pq.read_table(p, filesystem=fs)  # a final key always holds a whole Parquet file
    before = read_rows(fs, run)
    assert 0 < len(before) < total, f"the kill must land mid-run ({len(before)} of {total} rows)"
    assert accounting(before, expected)["duplicated"] == 0
    assert not fs.exists(f"{run}/summary.json")
    before_times = _image_times(fs, before)
    before_finished = {(r["product_id"], r["scene_id"]): r["finished_at"] for r in before}

    # Rerun the same run id (straight to the store now): only the pairs without a row are computed.
    proxy.__exit__(None, None, None)
    direct = ["--config", path, "--set", f"s3.endpoint_url={s3_server}"]
    assert nightly.main(direct) == 0
    after = read_rows(fs, run)
    counted = accounting(after, expected)
    assert counted == {"rows": total, "lost": 0, "duplicated": 0, "unexpected": 0}, counted
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["this_attempt"]["pairs"] == total - len(before)
    assert summary["pairs"] == total and summary["by_error_reason"] == {"fetch_missing": len(sample.scene_ids)}
    after_by_pair = {(r["product_id"], r["scene_id"]): r for r in after}
    assert all(after_by_pair[k]["finished_at"] == t for k, t in before_finished.items())  # rows untouched
    assert _image_times(fs, before) == before_times  # finished images not written again
    print(f"\nresume: {total} pairs; killed after {len(before)} rows in {len(parts)} parts; "
          f"rerun computed {summary['this_attempt']['pairs']}; lost {counted['lost']}, "
          f"duplicated {counted['duplicated']}")

    # A third attempt computes nothing; failed pairs stay failed until retry_failed is asked for.
    assert nightly.main(direct) == 0
    assert read_json(fs, f"{run}/summary.json")["this_attempt"]["pairs"] == 0
    assert len(read_rows(fs, run)) == total

    fs.pipe(late_uri, fs.cat(sample.catalogue_uri.replace("catalogue.parquet", "products/lamp-000.jpg")))
    ok_times = _image_times(fs, after)
    assert nightly.main([*direct, "--set", "retry_failed=true"]) == 0
    summary = read_json(fs, f"{run}/summary.json")
    assert summary["this_attempt"]["pairs"] == len(sample.scene_ids)  # only the failed ones
    assert summary["by_status"] == {"ok": total, "failed": 0}
    final = read_rows(fs, run)
    assert accounting(final, expected) == {"rows": total, "lost": 0, "duplicated": 0, "unexpected": 0}
    assert {k: v for k, v in _image_times(fs, final).items() if k in ok_times} == ok_times
