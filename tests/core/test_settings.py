"""core.settings: one loader for any job's settings model (file < TRYALL_* environment < --set), its errors and
the --help listing generated from the model's fields."""

from __future__ import annotations

import json
import pickle

import pytest
from pydantic import Field

from pipeline.core.settings import ConfigError, JobSettings, Section, load_settings, settings_fields, settings_help
from pipeline.inference.config import RunConfig


class Optimiser(Section):
    lr: float = Field(1e-5, gt=0, description="learning rate")
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999], description="Adam betas")


class ToySettings(JobSettings):
    """A second job's settings, shaped like a training job's: proves the loader is not RunConfig's."""

    data_uri: str = Field(description="where the training pairs are")
    epochs: int = Field(1, ge=1, description="passes over the data")
    optimiser: Optimiser = Optimiser()


def test_precedence_file_then_environment_then_set(tmp_path, monkeypatch):
    path = tmp_path / "toy.yaml"
    path.write_text("run_id: from-file\ndata_uri: s3://b/pairs\nepochs: 2\noptimiser: {lr: 0.1, betas: [0.5, 0.6]}\n")
    monkeypatch.setenv("TRYALL_EPOCHS", "3")
    monkeypatch.setenv("TRYALL_OPTIMISER__LR", "0.2")
    toy = load_settings(ToySettings, path, ["optimiser.lr=0.3"])
    assert type(toy) is ToySettings
    assert toy.run_id == "from-file"  # only the file sets it
    assert toy.epochs == 3  # environment beats the file
    assert toy.optimiser.lr == 0.3  # --set beats the environment
    assert toy.optimiser.betas == [0.5, 0.6]  # a section's other keys survive an override of one of them
    assert load_settings(ToySettings, path, [], environment=False).epochs == 2  # what a submitted job sees


def test_json_file_and_defaults(tmp_path):
    path = tmp_path / "toy.json"
    path.write_text(json.dumps({"run_id": "j", "data_uri": "d"}))
    toy = load_settings(ToySettings, path)
    assert (toy.run_id, toy.epochs, toy.optimiser.lr, toy.optimiser.betas) == ("j", 1, 1e-5, [0.9, 0.999])


def test_errors_name_the_field_for_any_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TRYALL_OPTIMISER__MOMENTUM", "0.9")
    with pytest.raises(ConfigError) as info:
        load_settings(ToySettings, None, ["run_id=../x", "epochs=0", "optimiser.lr=-1"])
    text = str(info.value)
    for expected in ("run_id: ", "epochs: Input should be greater than or equal to 1 (got 0)",
                     "optimiser.lr: Input should be greater than 0",
                     "optimiser.momentum: Extra inputs are not permitted",
                     "data_uri: Field required"):
        assert expected in text, text
    with pytest.raises(ConfigError, match="unknown_key: Extra inputs are not permitted"):
        load_settings(ToySettings, None, ["run_id=r", "data_uri=d", "unknown_key=1"])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.yaml does not exist"):
        load_settings(ToySettings, tmp_path / "nope.yaml")
    for name, text, reason in (("list.yaml", "- a\n- b\n", "must hold a mapping of settings, not list"),
                               ("list.json", "[1, 2]", "must hold a mapping of settings, not list"),
                               ("bad.yaml", "run_id: [unclosed\n", "could not be read"),
                               ("bad.json", "{run_id: 1}", "could not be read")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=reason):
            load_settings(ToySettings, tmp_path / name)
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="run_id: Field required"):  # an empty file is no settings, not an error
        load_settings(ToySettings, tmp_path / "empty.yaml")


def test_loaded_settings_pickle(tmp_path):
    """Ray ships the settings to its workers: what the loader returns is the plain model and pickles."""
    cfg = load_settings(RunConfig, None, ["run_id=r", "catalogue_uri=c", "scenes_uri=s", "output_uri=o",
                                          "variants=[{name: a}, {name: b, sampling: {steps: 3}}]"])
    assert type(cfg) is RunConfig
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.for_variant("b").sampling.steps == 3
    toy = load_settings(ToySettings, None, ["run_id=r", "data_uri=d"])
    assert pickle.loads(pickle.dumps(toy)) == toy


def test_help_lists_every_field_with_type_default_and_description():
    text = settings_help(ToySettings)
    assert "  run_id: str (required)\n      names the run" in text
    assert "  epochs: int (default 1)\n      passes over the data" in text
    assert "  optimiser.lr: float (default 1e-05)\n      learning rate" in text
    assert "  optimiser.betas: list[float] (default [0.9, 0.999])\n      Adam betas" in text
    assert [name for name, *_ in settings_fields(ToySettings)] == [
        "run_id", "data_uri", "epochs", "optimiser.lr", "optimiser.betas"]


def test_every_run_setting_is_listed_with_a_description():
    """`tryall nightly --help` shows each RunConfig setting, nested ones as a.b, with its default and description."""
    rows = settings_fields(RunConfig)
    names = [name for name, *_ in rows]
    for expected in ("run_id", "catalogue_uri", "sampling.steps", "compute.max_task_retries", "selection.shard_index",
                     "model.dtype", "variants", "variants.<i>.name", "retry_failed", "progress_interval_s"):
        assert expected in names
    assert len(names) == len(set(names))
    undescribed = [name for name, _, _, description in rows if not description]
    assert not undescribed, f"settings without a description: {undescribed}"
    text = settings_help(RunConfig)
    assert "  sampling.steps: int (default 40)\n" in text
    assert "  model.dtype: auto | fp16 | bf16 | fp32 (default auto)\n" in text
    assert "  pairs_uri: str | None (default null)\n" in text
