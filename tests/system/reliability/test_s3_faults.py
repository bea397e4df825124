"""S3 answering with throttling (503 SlowDown), dropped connections and cut-short answers for a while.

A flaky proxy sits between the pipeline and the moto server for the whole run: manifest reads, config.json, every
pair's fetches and image writes, the metadata parts and summary.json all pass through it. botocore's adaptive retries
(`s3.max_attempts`) and s3fs's own retries absorb the faults: the run completes, every pair is `ok` (none failed for
a fetch or a write), and each has exactly one row.
"""

from __future__ import annotations

import time

import pytest

from jobs import nightly
from pipeline.core.storage import S3Config
from pipeline.synthetic.samples import write_sample_set

from ._s3proxy import FlakyS3Proxy
from ._support import accounting, read_json, read_rows, s3_config, s3fs_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_completes_through_throttling_and_dropped_connections(ray_local, s3_server, s3_bucket, tmp_path):
    fs = s3fs_for(s3_server)
    sample = write_sample_set(f"s3://{s3_bucket}/inputs", n_products=4, n_scenes=4, scene_size=(160, 120),
                              s3=S3Config(**s3_config(s3_server)))
    expected = {(p, s, "default") for p in sample.product_ids for s in sample.scene_ids}
    run = f"{s3_bucket}/runs/flaky"
    forced = ("/metadata/", "/summary.json", f"/images/default/{sample.product_ids[0]}/")
    with FlakyS3Proxy(s3_server, fault_requests=200, fault_seconds=90, p_slowdown=0.15, p_drop=0.1,
                      p_truncate=0.05, seed=7, fail_puts_to=forced) as proxy:
        config = {
            "run_id": "flaky", "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
            "output_uri": f"s3://{s3_bucket}/runs", "pairing": {"strategy": "all"},
            "model": {"source": "noop", "allow_random_weights": True},
            "sampling": {"resolution": 64}, "compute": {"batch_size": 4}, "record": {"part_rows": 8},
            "s3": {**s3_config(proxy.url), "max_attempts": 10},
        }
        started = time.monotonic()
        assert nightly.main(["--config", write_config(tmp_path / "flaky.yaml", config)]) == 0
        wall = time.monotonic() - started

    rows = read_rows(fs, run)  # read back directly, not through the proxy
    counted = accounting(rows, expected)
    assert counted == {"rows": len(expected), "lost": 0, "duplicated": 0, "unexpected": 0}, counted
    failed = [(r["product_id"], r["scene_id"], r["error_reason"], r["error_message"]) for r in rows
              if r["status"] != "ok"]
    assert not failed, failed
    assert read_json(fs, f"{run}/summary.json")["by_status"] == {"ok": len(expected), "failed": 0}

    # The faults really happened, on reads and on writes: every metadata part, summary.json and one product's images
    # had their first two PUTs refused.
    assert proxy.count("slowdown") >= 10 and proxy.count("drop") >= 5 and proxy.count("truncate") >= 1, proxy.faults
    assert proxy.count("slowdown", "GET") and proxy.count("drop", "GET")
    assert proxy.count("slowdown", "PUT") and proxy.count("drop", "PUT")
    parts = [k for k in proxy.puts if "/metadata/" in k]
    assert parts and all(proxy.puts[k] >= 3 for k in parts)  # two failed attempts, then the write that landed
    assert [k for k in proxy.puts if k.endswith("/summary.json")]
    images = [k for k in proxy.puts if "/images/" in k]
    assert len(images) == len(sample.scene_ids) and all(proxy.puts[k] >= 3 for k in images)
    # Every object went up in one PUT (s3fs uses multipart only from 2 x 50 MiB), so no reader can see part of one.
    assert not [path for _, path in proxy.seen if "uploadId=" in path or "?uploads" in path]
    print(f"\ns3 faults: {proxy.requests} requests, faults {dict(proxy.faults)}; {len(rows)} rows, "
          f"lost {counted['lost']}, duplicated {counted['duplicated']}; {wall:.1f}s")
