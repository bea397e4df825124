"""Remote checkpoints through a real S3-protocol server (moto on 127.0.0.1), and the once-per-node cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import s3fs
import torch

from pipeline.model import CheckpointError, load_dtc
from pipeline.model import cache as cache_module

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _upload(local: Path, bucket: str, storage_options: dict) -> str:
    """Copy a checkpoint directory to s3://<bucket>/tiny; returns that URI."""
    fs = s3fs.S3FileSystem(**storage_options)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{bucket}/tiny/{path.relative_to(local).as_posix()}")
    return f"s3://{bucket}/tiny"


def test_load_from_s3(tiny_dtc, tiny_checkpoint, s3_store, tmp_path, monkeypatch):
    bucket, options = s3_store
    uri = _upload(tiny_checkpoint, bucket, options)
    dtc = load_dtc(uri, device=torch.device("cpu"), cache_dir=str(tmp_path), storage_options=options)
    assert dtc.model_id == uri
    for name, tensor in tiny_dtc.state_dict().items():
        assert torch.equal(dtc.state_dict()[name], tensor), name
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (entry / cache_module.COMPLETE_MARKER).is_file() and (entry / "dtc.json").is_file()
    # A second load uses the cached copy.
    calls = []
    monkeypatch.setattr(cache_module, "_download", lambda *args, **kwargs: calls.append(args))
    load_dtc(uri, device=torch.device("cpu"), cache_dir=str(tmp_path), storage_options=options)
    assert calls == []


def test_concurrent_threads_download_once(tiny_checkpoint, s3_store, tmp_path, monkeypatch):
    bucket, options = s3_store
    uri = _upload(tiny_checkpoint, bucket, options)
    calls = []
    real = cache_module._download

    def slow_download(*args, **kwargs):
        calls.append(threading.current_thread().name)
        time.sleep(0.5)  # widen the race window
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "_download", slow_download)
    barrier, results = threading.Barrier(3), []

    def worker() -> None:
        barrier.wait()
        results.append(cache_module.fetch(uri, cache_dir=tmp_path, storage_options=options))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 3 and len(set(results)) == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


_WORKER = """
import json, pathlib, sys, time
from pipeline.model import cache
calls = []
real = cache._download
def slow_download(*args, **kwargs):
    calls.append(1)
    time.sleep(0.5)
    return real(*args, **kwargs)
cache._download = slow_download
ready, go, uri, cache_dir, options = sys.argv[1:]
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.01)
path = cache.fetch(uri, cache_dir=cache_dir, storage_options=json.loads(options))
print(json.dumps({"path": str(path), "downloads": len(calls)}))
"""


def test_concurrent_processes_download_once(tiny_checkpoint, s3_store, tmp_path):
    bucket, options = s3_store
    uri = _upload(tiny_checkpoint, bucket, options)
    script, go, cache_dir = tmp_path / "worker.py", tmp_path / "go", tmp_path / "cache"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs, readies = [], []
    for i in range(2):
        ready = tmp_path / f"ready{i}"
        readies.append(ready)
        args = [sys.executable, str(script), str(ready), str(go), uri, str(cache_dir), json.dumps(options)]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in readies):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "workers did not start"
        time.sleep(0.05)
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(o["downloads"] for o in outputs) == 1
    assert outputs[0]["path"] == outputs[1]["path"]
    assert (Path(outputs[0]["path"]) / cache_module.COMPLETE_MARKER).is_file()


def test_remote_pickles_and_missing_checkpoints_refused(s3_store, tmp_path):
    bucket, options = s3_store
    s3fs.S3FileSystem(**options).pipe_file(f"{bucket}/pickled/model.ckpt", b"\x80\x04pickle")
    cpu = torch.device("cpu")
    with pytest.raises(CheckpointError, match=r"pickled/model\.ckpt is a pickle-format checkpoint, refused"):
        load_dtc(f"s3://{bucket}/pickled", device=cpu, cache_dir=str(tmp_path), storage_options=options)
    with pytest.raises(CheckpointError, match=f"checkpoint not found: s3://{bucket}/absent"):
        load_dtc(f"s3://{bucket}/absent", device=cpu, cache_dir=str(tmp_path), storage_options=options)


def test_fetch_a_single_remote_file(s3_store, tmp_path):
    """A URI naming one file (e.g. FID Inception weights) is fetched as that file, not `<file>/<file>`."""
    bucket, options = s3_store
    fs = s3fs.S3FileSystem(**options)
    fs.pipe_file(f"{bucket}/weights/pt_inception.safetensors", b"tensor bytes")
    local = cache_module.fetch(f"s3://{bucket}/weights/pt_inception.safetensors", cache_dir=tmp_path,
                               storage_options=options)
    assert local.name == "pt_inception.safetensors" and local.read_bytes() == b"tensor bytes"
    assert cache_module.fetch(f"s3://{bucket}/weights/pt_inception.safetensors", cache_dir=tmp_path,
                              storage_options=options) == local
