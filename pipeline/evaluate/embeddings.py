"""Embeddings of the images to score, on Ray Data: CPU tasks fetch, decode and cut them, encoder actors embed them.

The same shape as inference (pipeline/inference): CPU `map` tasks, then `map_batches` on an actor pool, one actor per
GPU, each loading its encoders once; without a GPU in the cluster the actors run on CPU. Every image becomes one row
with a status: one that is missing or unreadable is counted and reported, never a failed job.
"""

from __future__ import annotations

import gc
import logging
import traceback
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import ray
from PIL import Image

from pipeline.core.errors import INTERNAL_ERROR, MODEL_ERROR, PairError
from pipeline.core.storage import S3Config, read_bytes, storage_options
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.crops import FidResize, fid_input, region_crop, whole_image
from pipeline.evaluate.weights import Preprocessing
from pipeline.imaging.decode import decode_image
from pipeline.imaging.geometry import Box
from pipeline.imaging.masks import build_region

log = logging.getLogger(__name__)

ITEMS_PER_BLOCK = 32  # small blocks keep the CPU tasks parallel on few images
Role = Literal["generated", "reference", "real"]
ITEM_SCHEMA = pa.schema([
    ("item", pa.int64()),
    ("role", pa.string()),
    ("uri", pa.string()),
    ("crop", pa.string()),  # region: the scene's region (mask_uri or box); whole: the whole image
    ("mask_uri", pa.string()),
    ("box", pa.list_(pa.int64())),
])


@dataclass(frozen=True)
class Embeddings:
    """Per item (in item order): status (`ok` | `failed`), reason and message, and one matrix per encoder."""

    status: np.ndarray
    reason: np.ndarray
    message: np.ndarray
    vectors: dict[str, np.ndarray]

    def ok(self) -> np.ndarray:
        return self.status == "ok"


def _cut(image: Image.Image, bbox: Box | None, kind: str, size: int, fid_resize: FidResize) -> np.ndarray:
    """What encoder `kind` sees of the image: the region's bounding box (or the whole image where None) at its size."""
    if kind == "inception":
        return fid_input(image, bbox, size, fid_resize)
    return whole_image(image, size) if bbox is None else region_crop(image, bbox, size)


def prepare_item(row: dict[str, Any], sizes: dict[str, int], max_pixels: int, s3: S3Config | None, *,
                 fid_resize: FidResize) -> dict[str, Any]:
    """Fetch, decode and cut one image for each encoder's input size; a failure becomes the row's status."""
    out = {"item": row["item"], "status": "ok", "reason": "", "message": ""}
    # The FID Inception's inputs are resized without rounding: floats, on the 0..255 scale as the others.
    pixels = {kind: np.zeros((size, size, 3), np.float32 if kind == "inception" else np.uint8)
              for kind, size in sizes.items()}
    try:
        image = decode_image(read_bytes(row["uri"], s3), max_pixels=max_pixels, what=row["role"])
        bbox = None
        if row["crop"] == "region":
            mask_bytes = read_bytes(row["mask_uri"], s3) if row["mask_uri"] else None
            box = tuple(int(v) for v in row["box"]) if row["box"] is not None else None
            bbox = build_region(image.size, mask_bytes=mask_bytes, box=box, max_pixels=max_pixels).bbox
        pixels = {kind: _cut(image, bbox, kind, size, fid_resize) for kind, size in sizes.items()}
    except PairError as exc:
        out.update(status="failed", reason=exc.reason, message=exc.message)
    except Exception as exc:  # noqa: BLE001 - a bug: this image's row, with the traceback in the worker's log
        log.error("unexpected error preparing %s:\n%s", row["uri"], "".join(traceback.format_exception(exc)))
        out.update(status="failed", reason=INTERNAL_ERROR, message=f"{type(exc).__name__}: {exc}")
    out.update({f"pixels_{kind}": p for kind, p in pixels.items()})
    return out


class Encode:
    """One per GPU (or CPU worker without one): loads the encoders once, then embeds batches of cut images."""

    def __init__(self, cfg: EvalConfig, encoders: dict[str, tuple[str, Preprocessing]]) -> None:
        from pipeline.evaluate.encoders import load_embedder
        from pipeline.model.device import torch_dtype

        dtype = torch_dtype(cfg.encoders.dtype)
        self.embedders = {
            kind: load_embedder(kind, source, preprocessing, dtype=dtype, cache_dir=cfg.encoders.cache_dir,
                                storage_options=storage_options(source, cfg.s3))
            for kind, (source, preprocessing) in encoders.items()
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch["status"] = batch["status"].astype(object)
        batch["reason"] = batch["reason"].astype(object)
        batch["message"] = batch["message"].astype(object)
        ok = np.flatnonzero(batch["status"] == "ok")
        for kind, embedder in self.embedders.items():
            vectors = np.zeros((len(batch["item"]), embedder.dim), np.float32)
            if len(ok):
                try:
                    vectors[ok] = embedder.embed(batch[f"pixels_{kind}"][ok])
                except Exception as exc:  # noqa: BLE001 - the batch's images get the error, the job goes on
                    log.exception("%s embedding of a batch of %d images failed", kind, len(ok))
                    batch["status"][ok], batch["reason"][ok] = "failed", MODEL_ERROR
                    batch["message"][ok] = f"{kind} encoder: {type(exc).__name__}: {exc}"
                    ok = ok[:0]
            batch[f"vectors_{kind}"] = vectors
            del batch[f"pixels_{kind}"]
        return batch


def gpus_per_actor(cfg: EvalConfig) -> float:
    """The setting, or when unset one GPU per actor if the cluster has GPUs, else none (the CPU fallback)."""
    if cfg.compute.gpus_per_actor is not None:
        return cfg.compute.gpus_per_actor
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def embed_items(cfg: EvalConfig, items: pa.Table, encoders: dict[str, tuple[str, Preprocessing]],
                max_pixels: int) -> Embeddings:
    """Embed every item with every encoder (kind -> source and preprocessing); rows come back in any order and are
    put back in item order."""
    sources = list(encoders)
    sizes = {kind: preprocessing.size for kind, (_, preprocessing) in encoders.items()}
    n = items.num_rows
    status = np.full(n, "failed", object)
    reason = np.full(n, INTERNAL_ERROR, object)
    message = np.full(n, "no result from the embedding pass", object)
    vectors: dict[str, np.ndarray] = {}
    if n == 0 or not sources:
        return Embeddings(status, reason, message, {kind: np.zeros((n, 0), np.float32) for kind in sources})
    compute = cfg.compute
    blocks = [items.slice(i, ITEMS_PER_BLOCK) for i in range(0, n, ITEMS_PER_BLOCK)]
    ds = (
        ray.data.from_arrow(blocks)
        .map(prepare_item, fn_kwargs={"sizes": sizes, "max_pixels": max_pixels, "s3": cfg.s3,
                                      "fid_resize": cfg.distribution.fid_resize},
             num_cpus=compute.cpus_per_task)
        .map_batches(
            Encode,
            fn_constructor_kwargs={"cfg": cfg, "encoders": encoders},
            batch_size=compute.batch_size,
            batch_format="numpy",
            num_gpus=gpus_per_actor(cfg),
            num_cpus=compute.cpus_per_actor,
            compute=ray.data.ActorPoolStrategy(min_size=compute.actors_min, max_size=compute.actors_max),
        )
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        idx = batch["item"].astype(np.int64)
        status[idx], reason[idx], message[idx] = batch["status"], batch["reason"], batch["message"]
        for kind in sources:
            got = np.asarray(batch[f"vectors_{kind}"], np.float32)
            vectors.setdefault(kind, np.zeros((n, got.shape[1]), np.float32))[idx] = got
    del ds
    gc.collect()  # let go of the actor pool (and its GPU) now, as inference.ray_runtime.release_actors explains
    for kind in sources:
        vectors.setdefault(kind, np.zeros((n, 0), np.float32))
    return Embeddings(status, reason, message, vectors)
