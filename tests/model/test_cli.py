"""`python -m pipeline.model info|convert`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.model import load_dtc
from pipeline.model.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def test_info_named_config(capsys):
    assert main(["info", "tiny"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_id"] == "tiny" and info["default_resolution"] == 256
    assert info["components"]["image_encoder"]["type"] == "dinov2"
    assert info["parameters"]["total"] == sum(p.numel() for p in load_dtc("tiny").parameters())


def test_info_checkpoint(tiny_checkpoint, capsys):
    assert main(["info", str(tiny_checkpoint)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source"] == str(tiny_checkpoint) and info["components"]["hint"]["film_modules"] == 5


def test_convert_paint_by_example(pbe_dir, tmp_path, capsys):
    out = tmp_path / "dtc"
    assert main(["convert", "--from-paint-by-example", str(pbe_dir), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == str(out)
    converted = load_dtc(str(out), device=torch.device("cpu"))
    direct = load_dtc(str(pbe_dir), device=torch.device("cpu"))
    assert converted.image_encoder.kind == "paint_by_example"
    for name, tensor in direct.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name
    # Converting again into the same directory is bad input.
    assert main(["convert", "--from-paint-by-example", str(pbe_dir), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_convert_sd_inpaint_plus_dinov2(tiny_dtc, tmp_path, capsys):
    from transformers import Dinov2Config, Dinov2Model

    sd_dir, dino_dir, out = tmp_path / "sd", tmp_path / "dino", tmp_path / "dtc"
    tiny_dtc.unet.save_pretrained(str(sd_dir / "unet"), safe_serialization=True)
    tiny_dtc.vae.save_pretrained(str(sd_dir / "vae"), safe_serialization=True)
    Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        str(dino_dir)
    )
    args = ["convert", "--from-sd-inpaint", str(sd_dir), "--out", str(out)]
    assert main(args) == 2 and "--dinov2" in capsys.readouterr().err
    assert main([*args, "--dinov2", str(dino_dir)]) == 0
    dtc = load_dtc(str(out), device=torch.device("cpu"))
    assert dtc.image_encoder.kind == "dinov2" and dtc.image_encoder.proj.in_features == 48
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input_layout"] == "sd_inpaint" and info["hint_branch_trained"] is False
    base = {"kind": "sd_inpaint_dinov2", "sd_inpaint": str(sd_dir), "dinov2": str(dino_dir)}
    assert info["provenance"]["base"] == base
    assert info["provenance"]["trained_parts"] == [] and "not trained" in info["note"]


def test_bad_input_exits_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pipeline.model", "info", str(tmp_path / "missing")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no such model source")
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "--out", str(tmp_path / "x")])  # one of the --from-* options is required
    assert exit_info.value.code == 2
    assert main(["info", "tiny", "--storage-options", "{not json"]) == 2
