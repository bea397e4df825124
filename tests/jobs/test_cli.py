"""The job layer: the `tryall` console script, the one entry shape (jobs.cli.job_main) and the one list of jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from jobs import submit, tryall
from jobs.cli import JobMain, job_main, settings_of
from jobs.registry import JOBS, JobEntry
from pipeline.core.settings import JobSettings, settings_fields
from pipeline.inference.config import RunConfig

REPO = Path(__file__).resolve().parents[2]
TRYALL = Path(sys.executable).parent / "tryall"


class ToySettings(JobSettings):
    steps: int = Field(1, ge=1, description="how many steps the toy takes")


def _toy(cfg: ToySettings) -> int:
    print(f"toy {cfg.run_id} {cfg.steps}")
    return 0


@pytest.fixture
def toy_job(monkeypatch):
    """A new job is its settings model, its function and one line in the job list; nothing else changes."""
    monkeypatch.setitem(JOBS, "toy", JobEntry(__name__, "a toy job for the tests"))
    main = job_main("toy", ToySettings, _toy)
    monkeypatch.setattr(sys.modules[__name__], "main", main, raising=False)
    return main


def test_tryall_help_lists_every_job_with_its_description():
    done = subprocess.run([str(TRYALL), "--help"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tryall ")
    for name, entry in JOBS.items():
        assert f"  {name:<10} {entry.description}" in done.stdout


def test_tryall_without_or_with_an_unknown_job_is_exit_2(capsys):
    for argv in ([], ["nope"]):
        with pytest.raises(SystemExit) as info:
            tryall.main(argv)
        assert info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_tryall_nightly_help_lists_every_setting(capsys):
    with pytest.raises(SystemExit) as info:
        tryall.main(["nightly", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tryall nightly ")
    assert JOBS["nightly"].description in out
    for name, type_name, default, description in settings_fields(RunConfig):
        assert f"  {name}: {type_name} ({default})\n" in out
        assert description.split()[0] in out


def test_python_m_names_itself_in_its_usage():
    done = subprocess.run([sys.executable, "-m", "jobs.backfill", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m jobs.backfill ")
    assert "selection.shard_index: int (default 0)" in done.stdout


def test_bad_log_level_is_exit_2_with_the_choices(capsys):
    with pytest.raises(SystemExit) as info:
        tryall.main(["nightly", "--log-level", "loud", "--set", "run_id=r"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --log-level: invalid choice: 'LOUD' (choose from 'DEBUG', 'INFO', 'WARNING'" in err
    assert "Traceback" not in err


def test_invalid_settings_are_exit_2_naming_the_field(capsys):
    assert tryall.main(["ab", "--set", "run_id=r", "--set", "sampling.steps=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration:")
    assert "sampling.steps: Input should be greater than or equal to 1 (got 0)" in err


def test_every_listed_job_has_the_entry_shape():
    for name, entry in JOBS.items():
        module = __import__(entry.module, fromlist=["main"])
        assert callable(module.main), name
        assert isinstance(module.main, JobMain) == entry.submittable, name
        if entry.submittable:
            assert module.main.name == name and issubclass(settings_of(name), JobSettings)


def test_a_new_job_runs_through_tryall_and_its_own_settings(toy_job, capsys):
    assert tryall.main(["toy", "--set", "run_id=t1", "--set", "steps=3"]) == 0
    assert capsys.readouterr().out == "toy t1 3\n"
    assert toy_job(["--set", "run_id=t1", "--set", "steps=0"]) == 2
    assert "steps: Input should be greater than or equal to 1 (got 0)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tryall.main(["toy", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: tryall toy ") and "steps: int (default 1)\n      how many steps the toy takes" in out


def test_submit_takes_any_listed_job_and_validates_with_its_settings(toy_job, tmp_path, monkeypatch, capsys):
    assert settings_of("toy") is ToySettings
    assert submit.entrypoint("toy", None, ["run_id=t", "steps=2"], tmp_path) == (
        f"python -m {__name__} --set run_id=t --set steps=2")
    # Invalid for the toy's own model: refused here, before the cluster (nothing listens on port 9).
    code = submit.main(["toy", "--set", "run_id=t", "--set", "steps=0", "--address", "http://127.0.0.1:9",
                        "--runtime-env", ""])
    assert code == 2
    assert "steps: Input should be greater than or equal to 1 (got 0)" in capsys.readouterr().err
    # Valid: it gets as far as the cluster; RunConfig's required fields are not asked of the toy.
    monkeypatch.chdir(tmp_path)
    code = submit.main(["toy", "--set", "run_id=t", "--address", "http://127.0.0.1:9", "--runtime-env", ""])
    assert code == 2
    assert "cannot reach the Ray job server at http://127.0.0.1:9" in capsys.readouterr().err


def test_submit_usage_names_the_command_typed(capsys):
    with pytest.raises(SystemExit):
        tryall.main(["submit", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: tryall submit ")
    cluster_jobs = [name for name, entry in JOBS.items() if entry.submittable]
    assert {"nightly", "backfill", "ab", "train", "evaluate"} <= set(cluster_jobs)
    # The cluster jobs of the list, not demo, bench, report or submit itself.
    assert "{" + ",".join(cluster_jobs) + "}" in out.replace("\n", "").replace(" ", "")
