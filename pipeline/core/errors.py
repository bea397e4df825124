"""Error types with stable reasons.

A `PairError` ends one pair as a `failed` metadata row; it never fails its batch or the job. A `JobError`
stops the whole job before any GPU is requested, with exit status 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# Stable `error_reason` values written to metadata; downstream dashboards group by them.
FETCH_MISSING = "fetch_missing"
FETCH_ERROR = "fetch_error"
DECODE_ERROR = "decode_error"
IMAGE_TOO_LARGE = "image_too_large"
MASK_EMPTY = "mask_empty"
MASK_FULL = "mask_full"
MASK_OUT_OF_BOUNDS = "mask_out_of_bounds"
MASK_SIZE_MISMATCH = "mask_size_mismatch"
INVALID_BOX = "invalid_box"
MODEL_ERROR = "model_error"
WRITE_ERROR = "write_error"
INTERNAL_ERROR = "internal_error"
# The pair's block got no result: the worker process computing it died on every attempt (compute.max_task_retries + 1),
# e.g. a pair that crashes the model or exhausts memory. The driver writes these rows after the Ray Data pass.
WORKER_LOST = "worker_lost"


class PairError(Exception):
    """One pair cannot be produced; `reason` is a stable category, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"PairError({self.reason!r}, {self.message!r})"


class JobError(Exception):
    """The whole job cannot run (bad configuration, unreadable manifest, missing checkpoint)."""

    exit_code = 2


class RunStopped(JobError):
    """The run started but cannot go on: more blocks lost their worker than `compute.max_errored_blocks` allows.

    That many lost blocks is a systemic failure (a bad node, model or driver), not a poison pair. The rows finished
    so far are kept and summary.json is not written, so a rerun of the run id (or the next nightly) computes the rest.
    """


@contextmanager
def unexpected_as_internal(doing: str) -> Iterator[None]:
    """Re-raise any exception but a PairError as this pair's `internal_error`, chained to its cause.

    A bug or resource exhaustion in a pure stage function fails one pair with the cause, not its batch; the stage
    logs the chained traceback.
    """
    try:
        yield
    except PairError:
        raise
    except Exception as exc:
        raise PairError(INTERNAL_ERROR, f"{doing} failed unexpectedly: {type(exc).__name__}: {exc}") from exc
