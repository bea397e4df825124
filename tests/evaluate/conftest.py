"""One small finished A/B run for the session, and one evaluated copy of it (through the evaluate job's function)."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.evaluate._runs import MISSING, make_ab_run


@dataclass(frozen=True)
class EvaluatedRun:
    folder: Path
    printed: str  # what the job printed


@pytest.fixture(scope="session")
def ab_run(tmp_path_factory, ray_local) -> Path:
    return make_ab_run(tmp_path_factory.mktemp("ab"))


@pytest.fixture(scope="session")
def evaluated_run(ab_run, tmp_path_factory) -> EvaluatedRun:
    from jobs.evaluate import evaluate
    from pipeline.evaluate.config import EvalConfig

    folder = tmp_path_factory.mktemp("evaluated") / "ab-demo"
    shutil.copytree(ab_run, folder)  # a copy: read from where it is, not from the rows' output_uri
    product, scene, variant = MISSING
    (folder / "images" / variant / product / f"{scene}.png").unlink()
    cfg = EvalConfig.model_validate({"run_folder": str(folder),
                                     "encoders": {"clip": "tiny", "dinov2": "tiny", "inception": "tiny"},
                                     "ab": {"resamples": 500}, "report": {"rows_per_page": 10}})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert evaluate(cfg) == 0
    return EvaluatedRun(folder, printed.getvalue())
