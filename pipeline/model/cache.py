"""Remote checkpoints (s3://, gs://, ... through fsspec), downloaded once per node into a local cache directory.

Many processes start at once on a node (one Ray actor per GPU, plus CPU workers); each must end up with the same
complete local copy and only one may download it. So: a file lock per checkpoint, the download goes to a temporary
directory next to the final one, a completion marker is written inside it, and it is renamed into place (atomic on
one filesystem). Readers that find the marker use the copy without taking the lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import fsspec
from filelock import FileLock

from pipeline.core.model_sources import MODEL_CACHE_ENV
from pipeline.core.weights import SAFETENSORS_SUFFIX, is_pickle, pickle_refused

from .errors import CheckpointError

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".tryall-complete.json"


def default_cache_dir() -> Path:
    """$TRYALL_MODEL_CACHE_DIR, else ~/.cache/tryall/models."""
    env = os.environ.get(MODEL_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "tryall" / "models"


def _version_tag(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "generation", "LastModified", "mtime", "last_modified"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def _listing(fs: fsspec.AbstractFileSystem, root: str, uri: str) -> dict[str, dict[str, Any]]:
    """Files under `root` by path relative to it; a single file (`root` is one) by its name."""
    # A fresh listing, never the filesystem object's cached one: it decides whether the local copy is current.
    fs.invalidate_cache(root)
    try:
        if fs.isfile(root):
            return {posixpath.basename(root): fs.info(root)}
        found = fs.find(root, detail=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint not found: {uri}") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot list {uri}: {exc}") from exc
    files = {}
    prefix = root.rstrip("/") + "/"
    for path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        rel = path[len(prefix) :] if path.startswith(prefix) else Path(path).name
        files[rel] = info
    if not files:
        raise CheckpointError(f"checkpoint not found: {uri} (no files under it)")
    return files


def fetch(uri: str, *, cache_dir: str | Path | None = None, storage_options: dict[str, Any] | None = None) -> Path:
    """Local directory holding a complete copy of the checkpoint at `uri`, downloading it if this node lacks it; for
    `uri` naming a single file, the local copy of that file.

    The cache entry's name hashes the URI and the remote listing (names, sizes, ETags), so a checkpoint rewritten in
    place is downloaded again rather than served stale. Pickle-format files are not downloaded: they are never read.
    """
    fs, root = fsspec.url_to_fs(uri, **(storage_options or {}))
    files = _listing(fs, root, uri)
    single = list(files) == [posixpath.basename(root)] and fs.isfile(root)
    if single:  # the file's folder is what is listed and downloaded from; only the file is fetched
        root = posixpath.dirname(root.rstrip("/"))
    pickles = sorted(rel for rel in files if is_pickle(rel))
    wanted = {rel: info for rel, info in files.items() if rel not in pickles}
    if not any(rel.endswith(SAFETENSORS_SUFFIX) for rel in wanted):
        if pickles:
            raise pickle_refused(f"{uri.rstrip('/')}/{pickles[0]}")
        raise CheckpointError(f"{uri}: no safetensors weights")
    signature = json.dumps(sorted((rel, info.get("size"), _version_tag(info)) for rel, info in wanted.items()))
    key = hashlib.sha256(f"{uri}\n{signature}".encode()).hexdigest()[:24]
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = base / key
    found = final / next(iter(wanted)) if single else final
    if (final / COMPLETE_MARKER).is_file():
        return found
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f"{key}.lock")):
        if (final / COMPLETE_MARKER).is_file():
            return found
        if final.exists():
            # Only reachable if someone copied a partial directory into the cache by hand: never trust it.
            shutil.rmtree(final)
        _download(fs, root, uri, wanted, base, final)
    return found


def _download(
    fs: fsspec.AbstractFileSystem, root: str, uri: str, files: dict[str, dict[str, Any]], base: Path, final: Path
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=base))
    start = time.monotonic()
    log.info("downloading %s (%d files) to %s", uri, len(files), final)
    try:
        for rel, info in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get_file(f"{root.rstrip('/')}/{rel}", str(target))
            except OSError as exc:
                raise CheckpointError(f"cannot download {uri.rstrip('/')}/{rel}: {exc}") from exc
            size = info.get("size")
            if size is not None and target.stat().st_size != int(size):
                raise CheckpointError(
                    f"download of {uri.rstrip('/')}/{rel} is incomplete ({target.stat().st_size} of {size} bytes)"
                )
        marker = {"uri": uri, "files": sorted(files), "seconds": round(time.monotonic() - start, 3)}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker))
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("downloaded %s in %.1f s", uri, time.monotonic() - start)
