"""Errors raised while building or loading a DTC.

A checkpoint problem stops the job before any GPU work is requested, so it is a `JobError` (exit status 2); its
message always names the file or field at fault so an operator can fix it without reading code. The class lives with
the torch-free weights policy (`pipeline.core.weights`), whose pickle refusal is one of these errors.
"""

from __future__ import annotations

from pipeline.core.weights import CheckpointError

__all__ = ["CheckpointError"]
