"""`load_dtc`: one entry point from a model source string to a DTC ready for inference."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import fsspec
import torch

from pipeline.core.model_sources import PACKAGED_MODELS
from pipeline.core.weights import is_pickle, pickle_refused

from .build import build_random
from .cache import fetch
from .checkpoint import (
    INDEX_FILE,
    build_from_paint_by_example,
    load_checkpoint,
    read_json,
)
from .configs import NAMED_CONFIGS
from .device import resolve_dtype, select_device
from .dtc import DTC
from .errors import CheckpointError

log = logging.getLogger(__name__)

# Weights come from paths and object stores we control, never from a model hub.
HUB_PROTOCOLS = ("hf", "huggingface")


def local_path(source: str, *, cache_dir: str | None, storage_options: dict[str, Any] | None) -> Path:
    """A local directory for `source`: itself, the path of a file:// URI, or the node-local copy of a remote one."""
    if "://" in source:
        protocol = source.split("://", 1)[0]
        if protocol in ("file", "local"):
            _, path = fsspec.url_to_fs(source)
            return Path(path)
        if protocol in HUB_PROTOCOLS:
            raise CheckpointError(f"{source}: model hubs are never contacted; copy the weights to a path or s3:// URI")
        return fetch(source, cache_dir=cache_dir, storage_options=storage_options)
    return Path(source)


def load_local(path: Path, *, device: torch.device, dtype: torch.dtype, model_id: str) -> DTC:
    """A DTC from a local directory: a DTC checkpoint (dtc.json) or a Paint-by-Example pipeline (model_index.json)."""
    if is_pickle(path):
        raise pickle_refused(path)
    if path.is_file():
        raise CheckpointError(f"{path} is a file; a DTC checkpoint is a directory with {INDEX_FILE}")
    if not path.is_dir():
        raise CheckpointError(
            f"no such model source: {path} (expected one of {', '.join([*NAMED_CONFIGS, *PACKAGED_MODELS])}, a "
            "checkpoint directory, a file:// or an s3:// URI)"
        )
    if (path / INDEX_FILE).is_file():
        return load_checkpoint(path, device=device, dtype=dtype, model_id=model_id)
    if (path / "model_index.json").is_file():
        pipeline_class = read_json(path / "model_index.json").get("_class_name")
        if pipeline_class == "PaintByExamplePipeline":
            log.info("building a DTC from the Paint-by-Example pipeline at %s (zero hint branch)", path)
            return build_from_paint_by_example(path, device=device, dtype=dtype, model_id=model_id)
        raise CheckpointError(
            f"{path / 'model_index.json'}: a {pipeline_class} directory is not a DTC source; convert an SD-inpainting "
            "pipeline with `python -m pipeline.model convert --from-sd-inpaint DIR --dinov2 DIR --out DIR`"
        )
    raise CheckpointError(f"{path}: not a DTC checkpoint (no {INDEX_FILE}) nor a Paint-by-Example pipeline directory")


def load_dtc(
    source: str,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
) -> DTC:
    """The DTC named by `source` on `device` in `dtype`, in eval mode with gradients off.

    source: "tiny" | "small" | "sd15" (seeded random weights), "demo" (the trained model shipped in the package), a
    local checkpoint directory, a file:// URI, or a remote URI (s3://bucket/prefix, fetched once per node into
    `cache_dir`; `storage_options` go to `fsspec.url_to_fs`).
    A Paint-by-Example pipeline directory is accepted too and becomes a DTC with a zero hint branch.
    device: default CUDA when present else CPU. dtype: default fp16 on GPU, fp32 on CPU.
    """
    device = select_device(device)
    dtype = resolve_dtype(device, dtype)
    if source in NAMED_CONFIGS:
        dtc = build_random(NAMED_CONFIGS[source], device, dtype)
    elif source in PACKAGED_MODELS:
        dtc = load_local(PACKAGED_MODELS[source], device=device, dtype=dtype, model_id=source)
    else:
        path = local_path(source, cache_dir=cache_dir, storage_options=storage_options)
        dtc = load_local(path, device=device, dtype=dtype, model_id=source)
    if device.type == "cpu":
        own_aligned_memory(dtc)
    return dtc.eval().requires_grad_(False)


def own_aligned_memory(module: torch.nn.Module) -> None:
    """Give every CPU tensor its own freshly allocated (64-byte aligned) storage.

    Tensors read from files can sit at any offset of a shared buffer, and CPU BLAS/oneDNN kernels pick different
    code paths (so round differently) for unaligned data. Owning aligned copies makes a loaded model compute
    bit-identically to the same weights built in memory, and lets the kernels use their fast aligned paths.
    """
    module._apply(lambda t: t.clone(memory_format=torch.contiguous_format) if t.device.type == "cpu" else t)
