"""Stages that kill their own worker process, for the worker-loss tests (never used by the pipeline).

A test swaps them into `inference.graph` in the driver; Ray pickles them by reference (this module), so every worker
that runs them imports this module and behaves the same, restarted actors and retried tasks included. The process
dies by SIGKILL, as under the out-of-memory killer or a segfault: no Python exception, nothing to catch.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np

from pipeline.inference import stages

# The pair that kills whichever worker computes it (the sample set's ids: product `kind-NNN`, scene `room-NNN`).
POISON = ("vase-001", "room-001")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class PoisonedInference(stages.Inference):
    """The inference actor, killed by the batch holding POISON."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if POISON in zip(batch["product_id"].tolist(), batch["scene_id"].tolist(), strict=True):
            _die()
        return super().__call__(batch)


class DyingInference(stages.Inference):
    """The inference actor, killed by every batch: a systemic failure (a broken GPU, driver or model)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _die()
        return batch


def poisoned_preprocess(row: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """The CPU preprocess task, killed by POISON (e.g. a decoder that segfaults on one image)."""
    if (row["product_id"], row["scene_id"]) == POISON:
        _die()
    return stages.prepare_row(row, cfg)
