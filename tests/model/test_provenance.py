"""dtc.json's provenance: written by every builder, set by a trainer, shown by `info`, read without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import s3fs
import torch

from pipeline.core.errors import JobError
from pipeline.core.provenance import (
    check_provenance,
    hint_branch_trained,
    read_provenance,
    with_training,
)
from pipeline.model import CheckpointError, load_dtc, save_checkpoint
from pipeline.model.__main__ import main

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]


def _trained(provenance: dict, parts: list[str]) -> dict:
    return with_training(
        provenance, parts, data_uri="s3://data/train.parquet", steps=120, finished_at="2026-12-02T07:00Z"
    )


def test_builders_record_an_untrained_base(tiny_dtc, pbe_dir):
    assert tiny_dtc.provenance == {
        "base": {"kind": "random", "config": "tiny", "seed": 0},
        "trained_parts": [],
        "training": None,
    }
    pbe = load_dtc(str(pbe_dir), device=CPU)
    assert pbe.provenance["base"] == {"kind": "paint_by_example", "source": str(pbe_dir)}
    assert not hint_branch_trained(pbe.provenance) and not hint_branch_trained(None)


def test_training_record_and_hint_branch_trained():
    base = {"base": {"kind": "random", "config": "tiny", "seed": 0}, "trained_parts": [], "training": None}
    decoder_only = _trained(base, ["unet.decoder"])
    assert decoder_only["training"] == {
        "data_uri": "s3://data/train.parquet",
        "steps": 120,
        "finished_at": "2026-12-02T07:00Z",
    }
    assert not hint_branch_trained(decoder_only)
    # FiLM alone still ignores the collage (the adapter's output is zero), so both zero-initialised parts must move.
    assert not hint_branch_trained(_trained(base, ["hint.film"]))
    again = _trained(decoder_only, ["hint.film", "hint.adapter", "hint.encoder"])
    assert hint_branch_trained(again)
    assert again["trained_parts"] == ["unet.decoder", "hint.adapter", "hint.encoder", "hint.film"]
    assert again["training"]["previous"] == decoder_only["training"]
    assert base["trained_parts"] == []  # not modified in place


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"base": {"kind": "hub"}}, "provenance.base"),
        ({"trained_parts": ["unet"]}, "provenance.trained_parts"),
        ({"trained_parts": ["hint.film", "hint.film"]}, "provenance.trained_parts"),
        ({"trained_parts": ["hint.film"]}, "provenance.training is null"),
        ({"training": {"data_uri": "x", "steps": -1, "finished_at": "t"}}, "steps must be an integer"),
        ({"training": {"data_uri": "x"}}, "provenance.training must be null or an object"),
    ],
)
def test_malformed_provenance_refused(change, message):
    good = {"base": {"kind": "unrecorded"}, "trained_parts": [], "training": None}
    with pytest.raises(ValueError, match=message):
        check_provenance({**good, **change}, "here")


def test_saved_and_loaded_with_the_checkpoint(tiny_dtc, tmp_path, capsys):
    parts = ["unet.decoder", "hint.adapter", "hint.encoder", "hint.film"]
    trained = load_dtc("tiny", device=CPU)
    trained.provenance = _trained(trained.provenance, parts)
    ckpt = save_checkpoint(trained, tmp_path / "trained")
    assert json.loads((ckpt / "dtc.json").read_text())["provenance"] == trained.provenance
    assert load_dtc(str(ckpt), device=CPU).provenance == trained.provenance
    assert main(["info", str(ckpt)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hint_branch_trained"] is True and info["note"] is None
    assert info["provenance"]["training"]["steps"] == 120
    assert main(["info", "tiny"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hint_branch_trained"] is False and "hint branch was not trained" in info["note"]
    # A trainer's typo is refused before anything is written.
    trained.provenance = {**trained.provenance, "trained_parts": ["decoder"]}
    with pytest.raises(CheckpointError, match="trained_parts"):
        save_checkpoint(trained, tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_checkpoints_without_the_record_are_untrained(tiny_checkpoint, tmp_path):
    legacy = tmp_path / "legacy"
    shutil.copytree(tiny_checkpoint, legacy)
    index = json.loads((legacy / "dtc.json").read_text())
    del index["provenance"], index["input_layout"]
    (legacy / "dtc.json").write_text(json.dumps(index))
    dtc = load_dtc(str(legacy), device=CPU)
    assert dtc.provenance == {"base": {"kind": "unrecorded"}, "trained_parts": [], "training": None}
    assert dtc.input_layout == "paint_by_example"
    assert read_provenance(str(legacy)) == dtc.provenance
    index["provenance"] = {"base": {"kind": "random"}, "trained_parts": "all", "training": None}
    (legacy / "dtc.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"dtc\.json: provenance\.trained_parts"):
        load_dtc(str(legacy), device=CPU)
    with pytest.raises(JobError, match=r"dtc\.json: provenance\.trained_parts"):
        read_provenance(str(legacy))


def test_read_provenance_local_and_named(tiny_checkpoint, pbe_dir, tmp_path):
    expected = json.loads((tiny_checkpoint / "dtc.json").read_text())["provenance"]
    assert read_provenance(str(tiny_checkpoint)) == expected
    assert read_provenance(tiny_checkpoint.as_uri()) == expected
    assert read_provenance("tiny") is None and read_provenance("sd15") is None and read_provenance("noop") is None
    assert read_provenance(str(pbe_dir)) == load_dtc(str(pbe_dir), device=torch.device("meta")).provenance
    with pytest.raises(JobError, match="not a DTC checkpoint"):
        read_provenance(str(tmp_path))


@pytest.mark.integration
def test_read_provenance_from_s3(tiny_checkpoint, s3_store):
    bucket, options = s3_store
    fs = s3fs.S3FileSystem(**options)
    fs.put_file(str(tiny_checkpoint / "dtc.json"), f"{bucket}/ckpt/dtc.json")
    expected = json.loads((tiny_checkpoint / "dtc.json").read_text())["provenance"]
    assert read_provenance(f"s3://{bucket}/ckpt", options) == expected
    with pytest.raises(JobError, match="not a DTC checkpoint"):
        read_provenance(f"s3://{bucket}/nothing-here", options)


def test_reading_provenance_imports_no_torch(tiny_checkpoint):
    code = (
        "import sys; from pipeline.core.provenance import read_provenance; "
        f"read_provenance({str(tiny_checkpoint)!r}); assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
