"""Object storage through fsspec (s3fs for `s3://`, the local filesystem otherwise).

Every read and write of the pipeline goes through here, so S3 settings, retries and atomic writes live in one
place. Credentials are never passed: s3fs/botocore take them from the standard AWS chain.
"""

from __future__ import annotations

import mimetypes
import os
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec.core import split_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem
from pydantic import Field

from pipeline.core.errors import FETCH_ERROR, FETCH_MISSING, PairError
from pipeline.core.settings import Section


class S3Config(Section):
    """Where and how to reach S3 (credentials come from the standard AWS chain, never from settings)."""

    endpoint_url: str | None = Field(None, description="an S3-compatible endpoint; None means AWS")
    region: str | None = Field(None, description="the S3 region; None: the AWS chain's default")
    max_attempts: int = Field(10, ge=1, le=50, description="botocore retry attempts (adaptive mode)")


def storage_options(uri: str, s3: S3Config | None) -> dict[str, Any]:
    """fsspec options for `uri`: endpoint, region and adaptive retries for S3, nothing for local paths."""
    if not uri.startswith(("s3://", "s3a://")) or s3 is None:
        return {}
    options: dict[str, Any] = {
        # Adaptive retries back off on 503 SlowDown and retry dropped connections.
        "config_kwargs": {"retries": {"max_attempts": s3.max_attempts, "mode": "adaptive"}},
    }
    if s3.endpoint_url:
        options["endpoint_url"] = s3.endpoint_url
    if s3.region:
        options["client_kwargs"] = {"region_name": s3.region}
    return options


def filesystem(uri: str, s3: S3Config | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the path within it; fsspec caches instances, so this is cheap to call per task."""
    return url_to_fs(uri, **storage_options(uri, s3))


def absolute(uri: str) -> str:
    """`uri` with a relative local path made absolute: Ray Train workers run in their own working directory."""
    return uri if "://" in uri or os.path.isabs(uri) else os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    """Join key segments onto a URI or path without touching the scheme's `//`."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


# Image URIs come from manifests: data, not trusted. Only the locations the contract names are fetched, so a
# manifest row cannot make a worker fetch http(s) URLs (the instance metadata service, say) or chain filesystems.
READABLE_PROTOCOLS = (None, "file", "local", "s3", "s3a")


def read_bytes(uri: str, s3: S3Config | None = None) -> bytes:
    """The object's bytes; a missing object or a failed read becomes a PairError with a stable reason.

    The read itself is retried by botocore (adaptive mode, `s3.max_attempts`) and by s3fs (throttling, dropped
    connections) before a pair is failed with `fetch_error`.
    """
    if not isinstance(uri, str) or "::" in uri or split_protocol(uri)[0] not in READABLE_PROTOCOLS:
        raise PairError(FETCH_ERROR, f"{uri!r} is not a location tryall reads: use s3://, file:// or a local path")
    try:
        fs, path = filesystem(uri, s3)
        return fs.cat_file(path)
    except FileNotFoundError:
        raise PairError(FETCH_MISSING, f"{uri} does not exist") from None
    except IsADirectoryError:
        raise PairError(FETCH_ERROR, f"{uri} is a directory, not an image") from None
    except (OSError, ValueError) as exc:
        raise PairError(FETCH_ERROR, f"could not read {uri}: {type(exc).__name__}: {exc}") from None


# A local write's temporary sibling: hidden (leading `.`), so listings and dataset discovery skip it.
TEMP_PREFIX = ".tmp-"


# Content types by extension from the standard library's own table (not the machine's mime.types files, so every
# node agrees), with WebP, which that table lacks before Python 3.13.
_TYPES = mimetypes.MimeTypes()
_TYPES.add_type("image/webp", ".webp")


def content_type_of(uri: str) -> str | None:
    """The Content-Type a key's extension names (`.jpg` image/jpeg, `.html` text/html, ...); None when it names none
    or names a compression (`.gz`: the type of what is inside would be wrong for the bytes stored)."""
    kind, encoding = _TYPES.guess_type(posixpath.basename(uri))
    return kind if encoding is None else None


def write_bytes(uri: str, data: bytes, s3: S3Config | None = None, *, content_type: str | None = None) -> None:
    """Write so that a reader never sees a partial object under the final key.

    An S3 PUT is atomic by itself (object stores have no partial objects): s3fs's pipe_file sends one PutObject
    below 2 x 50 MiB (all our images and parts), and above that a multipart upload, whose object appears only when
    CompleteMultipartUpload succeeds, so it is whole too. A failed or throttled PUT is retried by botocore and
    s3fs. On a local filesystem the bytes go to a temporary sibling first and are renamed into place.
    `content_type` is the object's Content-Type on S3, by default the one the key's extension names: a browser shows
    an image or a page served from a bucket inline only with its type (S3 otherwise stores binary/octet-stream).
    """
    fs, path = filesystem(uri, s3)
    if not isinstance(fs, LocalFileSystem):
        content_type = content_type or content_type_of(path)
        # pipe_file passes it to PutObject, or to CreateMultipartUpload above its chunk size.
        fs.pipe_file(path, data, **({"ContentType": content_type} if content_type else {}))
        return
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def exists(uri: str, s3: S3Config | None = None) -> bool:
    fs, path = filesystem(uri, s3)
    return fs.exists(path)
