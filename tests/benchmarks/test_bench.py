"""The bench runs end to end at test size and writes the report's headline figures (no timing is asserted here:
timing belongs in benchmarks/)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import cli as bench
from benchmarks.report import HEADLINES, headline, table

pytestmark = pytest.mark.integration


def test_quick_bench_writes_the_headline_figures(ray_local, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert bench.main(["--quick", "--parts", "model,pipeline,cpu_stages", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for part, key in HEADLINES:
        value = report[part][key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (part, key, value)
        assert report["headline"][f"{part}.{key}"] == value
    machine = report["machine"]
    assert machine["cpu_cores"] and machine["gpu"] and machine["versions"]["torch"] and machine["load_average"]
    for part in ("model", "pipeline", "cpu_stages"):
        assert report[part]["measured_on"]["cpu_model"]
    model = report["model"]
    assert [r["path"] for r in model["rows"]][:2] == ["naive", "fast"]
    assert model["naive_vs_fast_max_pixel_diff"] <= 2  # the naive reference does the same work
    for name in ("end_to_end", "noop"):
        for run in report["pipeline"][name]["runs"]:
            assert run["ok"] == run["pairs"] > 0 and run["failed"] == 0, (name, run)
    floors = report["cpu_stages"]["floors"]
    assert 0 < floors["box_codec_floor_core_ms"] <= floors["mask_codec_floor_core_ms"]
    printed = capsys.readouterr().out
    assert "codec floors" in printed and "scene shared by 3 consecutive pairs" in printed
    shared = report["cpu_stages"]["scene_shared"]
    assert shared["pairs_per_scene"] == 3 and shared["mask"]["total_core_ms"] > 0
    assert "model.speedup" in printed and "cpu_stages.total_core_ms_per_pair" in printed


def test_unknown_part_is_refused(tmp_path):
    assert bench.main(["--parts", "model,gpu", "--out", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


def test_table_and_headline_of_a_partial_report():
    report = {"machine": {"cpu_model": "x", "cpu_cores": 2, "gpu": "none", "versions": {"torch": "t", "ray": "r"},
                          "load_average": [1.0, 1.0, 1.0]},
              "memory": {"runs": [{"pairs": 10, "driver_peak_rss_mib": 100.0, "worker_peak_rss_mib": 200.0,
                                   "ms_per_pair": 5.0}], "driver_ratio": 1.0, "worker_ratio": 1.0,
                         "within_1_5x": True}}
    assert headline(report) == {f"{p}.{k}": None for p, k in HEADLINES}
    text = table(report)
    assert "driver peak 100.0 MiB" in text and "model.speedup = -" in text
