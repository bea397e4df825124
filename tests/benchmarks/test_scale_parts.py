"""The memory and cluster parts: their figures from fake measurements (fast), the sleeping model's hook, and each part
end to end at test size with a real Ray (no figure asserted: timing belongs in benchmarks/)."""

from __future__ import annotations

import os
import time
from unittest.mock import patch

import numpy as np
import pytest

from benchmarks import cluster, memory
from benchmarks.measure import MemorySampler, process_kind
from pipeline.inference import stages


def test_steady_leaves_the_first_batch_out():
    arrivals = [(10.0, 0.0, 4), (11.0, 0.0, 4), (12.0, 0.0, 4), (13.0, 0.0, 4)]
    out = memory._steady(arrivals, started=8.0)
    assert out["pairs_finished"] == 16 and out["steady_pairs"] == 12 and out["first_batch_after_s"] == 2.0
    assert out["steady_ms_per_pair"] == pytest.approx(3 / 12 * 1e3)
    assert "steady_ms_per_pair" not in memory._steady(arrivals[:2], started=8.0)


def test_driver_timeline_places_the_peak_among_the_batches():
    """The driver's peak and timeline, each with the pairs finished by then: 0 before the first batch."""
    sampler = MemorySampler(timeline_s=10.0)
    for at, mib in ((100.0, 50.0), (105.0, 80.0), (112.0, 70.0), (125.0, 90.0), (130.0, 60.0)):
        with patch.object(time, "perf_counter", return_value=at):
            sampler._driver_sample(mib)
        sampler.anon_peaks[os.getpid()] = max(sampler.anon_peaks.get(os.getpid(), 0.0), mib)
    arrivals = [(110.0, 0.0, 4), (120.0, 0.0, 4), (126.0, 0.0, 4)]
    out = memory.driver_timeline(sampler, arrivals, started=100.0)
    assert out["driver_peak_anon_after_s"] == 25.0 and out["driver_peak_anon_pairs_done"] == 8
    assert out["driver_anon_timeline"] == [[0.0, 50.0, 0], [12.0, 70.0, 4], [25.0, 90.0, 8]]


def test_part_watch_times_the_parts(tmp_path):
    started = time.perf_counter()
    watch = memory.PartWatch(tmp_path / "metadata", started)
    watch.poll()  # no folder yet
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "part-0.parquet").write_bytes(b"x")
    watch.poll()
    (tmp_path / "metadata" / "part-1.parquet").write_bytes(b"x")
    watch.poll()
    out = watch.summary()
    assert out["metadata_parts"] == 2 and out["first_part_after_s"] >= 0 and out["part_interval_max_s"] >= 0


def test_process_kind_names_a_process_without_its_arguments():
    """Kinds group processes across runs: an actor's title without the method it is running, a program by name."""
    assert process_kind("ray::_StatsActor.update_execution_metrics") == "ray::_StatsActor"
    assert process_kind("ray::MapWorker(MapBatches(Inference)).submit") == "ray::MapWorker(MapBatches(Inference))"
    assert process_kind("ray::ReadParquet->MapBatches(preprocess) ") == "ray::ReadParquet->MapBatches(preprocess)"
    assert process_kind("/venv/lib/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/x --port=0") == "gcs_server"
    assert process_kind("/venv/bin/python3.11 -u /venv/lib/ray/dashboard/dashboard.py --host=::1") == "dashboard.py"
    assert process_kind("") == "?"


def test_scaling_against_linear():
    points = [{"actors": 1, "pairs_per_s": 10.0}, {"actors": 2, "pairs_per_s": 19.0},
              {"actors": 4, "pairs_per_s": 36.0}]
    out = cluster.scaling(points)
    assert out["scaling_efficiency"] == {"1": 1.0, "2": 0.95, "4": 0.9}
    assert out["min_scaling_efficiency"] == 0.9 and out["at_least_0_9_linear"]
    assert not cluster.scaling([{"actors": 1, "pairs_per_s": 10.0}])["at_least_0_9_linear"]


def test_sleeping_noop_sleeps_per_batch(monkeypatch):
    monkeypatch.setattr(stages.NoopSampler, "generate", stages.NoopSampler.generate)  # restored after the test
    monkeypatch.setenv(cluster.SLEEP_ENV, "0.05")
    cluster.sleeping_noop()
    batch = type("Batch", (), {"scene": np.ones((2, 4, 4, 3), np.uint8)})()
    started = time.perf_counter()
    out = stages.NoopSampler().generate(batch)
    assert time.perf_counter() - started >= 0.05 and (out == batch.scene).all()


@pytest.mark.integration
@pytest.mark.bench
def test_memory_part_reports_a_stopped_run_as_partial(tmp_path):
    report = memory.bench_memory((16, 50_000), workdir=tmp_path, max_seconds=45)
    small, large = report["runs"]
    assert not small["partial"] and small["ok"] == small["pairs_finished"] == 16
    assert large["partial"] and large["pairs_finished"] < 50_000 and large["stopped_after_s"] < 45 + 30
    for run in report["runs"]:
        assert run["driver_peak_anon_mib"] > 0 and run["worker_peak_anon_mib"] > 0
        assert run["object_store_samples"] > 0 and run["object_store_capacity_mib"] > 0
        assert run["ray_system_peak_anon_mib"] > 0 and "gcs_server" in run["process_kinds_peak_anon_mib"]
    assert small["metadata_parts"] == 1 and small["first_part_after_s"] > 0
    assert set(large["vs_smallest"]) == set(memory.RATIO_KEYS)


@pytest.mark.integration
@pytest.mark.bench
def test_cluster_part_places_one_actor_per_fake_gpu(tmp_path):
    plan = cluster.ClusterPlan(pairs=48, actors=(1, 2), sleep_s=0.1, batch_size=4, cpu_nodes=1, cpus_per_node=2,
                               object_store_mib=128)
    report = cluster.bench_cluster(plan, workdir=tmp_path)
    for point in report["points"]:
        assert point["ok"] == point["pairs"] == 48
        assert point["inference_nodes"] == point["actors"]  # each actor on its own fake-GPU node
        assert point["actor_seconds_per_batch"] >= 0.1  # the hook reached the actors
    assert set(report["scaling_efficiency"]) <= {"1", "2"}
