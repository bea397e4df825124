"""Weights are safetensors, for every job: the pickle suffixes, the one error for a pickle file, and the driver's check
of a weights location. Torch-free, so the driver can check a source before any GPU is requested; the loaders refuse
with the same error where they read."""

from __future__ import annotations

import os
from dataclasses import dataclass

import fsspec

from pipeline.core.errors import JobError
from pipeline.core.storage import S3Config, filesystem

# Pickle-format weight files, refused everywhere: tryall never unpickles a file.
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
SAFETENSORS_SUFFIX = ".safetensors"


class CheckpointError(JobError):
    """A checkpoint, model source or component cannot be used (missing, corrupt, pickled or inconsistent)."""


def is_pickle(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a pickle-format file (by its suffix, any case; a trailing slash is ignored)."""
    return str(path).rstrip("/").lower().endswith(PICKLE_SUFFIXES)


def pickle_refused(path: str | os.PathLike[str], where: str | None = None) -> CheckpointError:
    """The error for a pickle-format file at `path`; `where` (a setting and its value) prefixes it when given."""
    prefix = f"{where}: " if where else ""
    return CheckpointError(
        f"{prefix}{path} is a pickle-format checkpoint, refused (tryall never unpickles files, so pickle-format "
        "weights are refused everywhere); convert it to safetensors with "
        "save_pretrained(..., safe_serialization=True), or safetensors.torch.save_file for a bare state dict"
    )


@dataclass(frozen=True)
class WeightsLocation:
    """A checked weights location: its filesystem and path, and for a folder every file under it."""

    fs: fsspec.AbstractFileSystem
    path: str
    is_dir: bool
    files: tuple[str, ...]


def check_weights_location(
    source: str, s3: S3Config | None, *, where: str, what: str, missing_hint: str = ""
) -> WeightsLocation:
    """`source` (a local path, file:// or s3:// URI) exists and is not pickled: a file without a pickle suffix, or a
    folder holding at least one .safetensors file (pickles beside it are ignored, never read).

    Every error starts with `where` (the setting and its value, e.g. "model.source s3://b/m"): "cannot be reached"
    with the storage error, "no {what} there{missing_hint}", "no safetensors weights under it", or the pickle error
    naming the file. What else the location must hold is the caller's to check.
    """
    if is_pickle(source):
        raise pickle_refused(source, where)
    try:
        fs, path = filesystem(source, s3)
        found = fs.exists(path)
        is_dir = found and fs.isdir(path)
        files = tuple(str(f) for f in fs.find(path)) if is_dir else ()
    except Exception as exc:  # noqa: BLE001 - any storage failure here is a job error with its cause
        raise CheckpointError(f"{where}: cannot be reached: {type(exc).__name__}: {exc}") from exc
    if not found:
        raise CheckpointError(f"{where}: no {what} there{missing_hint}")
    if is_dir and not any(f.endswith(SAFETENSORS_SUFFIX) for f in files):
        pickles = sorted(f for f in files if is_pickle(f))
        if pickles:
            raise pickle_refused(pickles[0], where)
        raise CheckpointError(f"{where}: no safetensors weights under it")
    return WeightsLocation(fs=fs, path=path, is_dir=is_dir, files=files)
