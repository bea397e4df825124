"""Errors raised while building or loading a DTC.

A checkpoint problem stops the job before any GPU work is requested, so it is a `JobError` (exit status 2); its
message always names the file or field at fault so an operator can fix it without reading code.
"""

from __future__ import annotations

from pipeline.core.errors import JobError


class CheckpointError(JobError):
    """A checkpoint, model source or component cannot be used (missing, corrupt, pickled or inconsistent)."""
