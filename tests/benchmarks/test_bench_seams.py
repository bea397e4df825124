"""`python -m benchmarks --parts seams` at test size: the part runs and reports every case and method, and no
method changes a pixel outside the dilated region (no timing or quality figure asserted)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import cli as bench
from pipeline.imaging.color_match import COLOR_MATCH_METHODS


@pytest.mark.usefixtures("one_torch_thread")
def test_quick_seams_part(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert bench.main(["--quick", "--parts", "seams", "--out", str(out)]) == 0
    seams = json.loads(out.read_text())["seams"]
    assert seams["measured_on"]["cpu_model"]
    assert {"demo", "tiny", "photo_drift_256x192"} == set(seams["cases"])
    for name, case in seams["cases"].items():
        assert set(COLOR_MATCH_METHODS) <= set(case["methods"]), name
        for method, stats in case["methods"].items():
            assert stats["outside_changed_px_max"] == 0, (name, method)
            assert stats["pairs"] > 0 and math.isfinite(stats["seam_delta_e_mean"]), (name, method)
    assert "floor" in seams["cases"]["photo_drift_256x192"]["methods"]
    cost = seams["cost"]["by_scene"]["256x192"]
    assert cost["paste_back_core_ms"] > 0 and set(COLOR_MATCH_METHODS) <= set(cost)
    printed = capsys.readouterr().out
    assert "seams: ΔE00 seam mean" in printed and "cost at 256x192" in printed
