"""`python -m benchmarks --parts train` at test size: the part runs and reports its figures (no timing asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import cli as bench


@pytest.mark.usefixtures("one_torch_thread")
def test_quick_train_part(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert bench.main(["--quick", "--parts", "train", "--out", str(out)]) == 0
    train = json.loads(out.read_text())["train"]
    assert train["samples_per_s"] > 0 and train["peak_memory_gib"] > 0 and train["finite_losses"]
    assert train["trained_parameters"] > 0 and train["measured_on"]["cpu_model"]
    assert "samples/s per worker" in capsys.readouterr().out
