"""`tryall train` / `python -m jobs.train`: settings and input problems end the job with exit status 2 before any
Ray worker starts."""

from __future__ import annotations

import torch

from jobs.registry import JOBS
from jobs.train import main
from tests.train._helpers import write_manifest


def test_train_is_a_submittable_job():
    assert JOBS["train"].module == "jobs.train" and JOBS["train"].submittable


def test_bad_inputs_exit_2_with_the_reason(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "data", 2)
    base = ["--set", "run_id=r", "--set", f"output_uri={tmp_path / 'runs'}"]
    assert main([*base, "--set", f"manifest_uri={tmp_path / 'missing.parquet'}"]) == 2
    assert "does not exist" in capsys.readouterr().err

    pickle = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, pickle)
    assert main([*base, "--set", f"manifest_uri={manifest}", "--set", "train.perceptual_weight=0.5",
                 "--set", f"train.vgg_weights={pickle}"]) == 2
    assert "pickle-format weights are refused" in capsys.readouterr().err

    assert main([*base, "--set", f"manifest_uri={manifest}", "--set", "train.trainable=[vae, hint.film]"]) == 2
    assert "the VAE is never trained" in capsys.readouterr().err
    assert main([*base, "--set", f"manifest_uri={manifest}", "--set", "train.trainable=[hint.flim]"]) == 2
    assert "unknown part names" in capsys.readouterr().err
    assert main([*base, "--set", f"manifest_uri={manifest}", "--set", f"model.source={tmp_path}"]) == 2
    assert "not a DTC checkpoint" in capsys.readouterr().err
    assert main([*base, "--set", f"manifest_uri={manifest}", "--set", "model.source=klein-tiny"]) == 2
    assert "training makes a DTC" in capsys.readouterr().err


def test_the_workers_get_local_paths_made_absolute(tmp_path, monkeypatch):
    from pipeline.train.config import TrainConfig
    from pipeline.train.trainer import with_absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.model_validate({"run_id": "r", "manifest_uri": "data/train.parquet", "output_uri": "runs",
                                      "model": {"source": "start"}, "train": {"vgg_weights": "vgg.safetensors"}})
    absolute = with_absolute_paths(cfg)
    assert absolute.manifest_uri == str(tmp_path / "data" / "train.parquet")
    assert absolute.output_uri == str(tmp_path / "runs")
    assert absolute.model.source == str(tmp_path / "start")
    assert absolute.train.vgg_weights == str(tmp_path / "vgg.safetensors")
    named = cfg.model.model_copy(update={"source": "demo"})
    remote = cfg.model_copy(update={"output_uri": "s3://b/runs", "model": named})
    assert with_absolute_paths(remote).output_uri == "s3://b/runs"
    assert with_absolute_paths(remote).model.source == "demo"
