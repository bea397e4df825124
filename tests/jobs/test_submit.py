"""jobs.submit without a cluster: the submission id, the entrypoint, and what it refuses before contacting Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobs import submit

REPO = Path(__file__).resolve().parents[2]


def test_submission_id_derives_from_the_run_id():
    assert submit.submission_id("nightly", "nightly-2026-11-25") == "nightly-nightly-2026-11-25"
    assert submit.submission_id("backfill", "bf-s0", attempt=3) == "backfill-bf-s0-3"


def test_entrypoint_uses_the_config_path_inside_the_working_dir(tmp_path):
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "nightly.yaml"
    config.write_text("{}")
    command = submit.entrypoint("nightly", str(config), ["run_id=n 1", "sampling.steps=20"], tmp_path)
    assert command == ("python -m jobs.nightly --config configs/nightly.yaml --set 'run_id=n 1' "
                       "--set sampling.steps=20")
    with pytest.raises(submit.SubmitError, match="outside the working directory"):
        submit.entrypoint("nightly", "/etc/hostname", [], tmp_path)


@pytest.mark.parametrize("name", ["nightly", "backfill", "ab"])
def test_example_configs_are_valid_and_submit_from_the_repository_root(name, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = submit.load_local_config(name, f"configs/{name}.yaml", ["run_id=r-1"])
    assert cfg.output_uri.startswith("s3://tryall-output/runs/")  # the prefix infra/iam-policy.json lets jobs write
    assert submit.entrypoint(name, f"configs/{name}.yaml", ["run_id=r-1"], Path(".")) == (
        f"python -m jobs.{name} --config configs/{name}.yaml --set run_id=r-1")
    env = submit.read_runtime_env(submit.DEFAULT_RUNTIME_ENV)
    assert env["working_dir"] == "."
    if name == "ab":
        assert len(cfg.variants) >= 2


def test_invalid_config_is_refused_before_contacting_the_cluster(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"run_id": "r", "catalogue_uri": "c", "scenes_uri": "s",
                                                       "output_uri": "o", "sampling": {"steps": 0}}))
    # Nothing listens on port 9: reaching the cluster would fail differently.
    code = submit.main(["nightly", "--config", "run.yaml", "--address", "http://127.0.0.1:9", "--runtime-env", ""])
    assert code == 2
    assert "sampling.steps: Input should be greater than or equal to 1 (got 0)" in capsys.readouterr().err


def test_unreachable_cluster_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"run_id": "r", "catalogue_uri": "c", "scenes_uri": "s",
                                                       "output_uri": "o"}))
    code = submit.main(["nightly", "--config", "run.yaml", "--address", "http://127.0.0.1:9", "--runtime-env", ""])
    assert code == 2
    assert "cannot reach the Ray job server at http://127.0.0.1:9" in capsys.readouterr().err


def test_local_tryall_settings_do_not_decide_the_run_id(tmp_path, monkeypatch, capsys):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"run_id": "from-file", "catalogue_uri": "c",
                                                       "scenes_uri": "s", "output_uri": "o"}))
    monkeypatch.setenv("TRYALL_RUN_ID", "from-env")
    cfg = submit.load_local_config("nightly", str(tmp_path / "run.yaml"), [])
    assert cfg.run_id == "from-file"  # the job on the cluster does not see this shell's TRYALL_RUN_ID
    assert "TRYALL_RUN_ID is set here but does not reach the job" in capsys.readouterr().err
