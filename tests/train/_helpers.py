"""Small training sets on disk: procedural photos of one coloured object each, and their manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.synthetic.images import encode
from pipeline.train.config import TrainConfig


def object_photo(seed: int, size: tuple[int, int] = (160, 120)) -> tuple[bytes, tuple[int, int, int, int]]:
    """A PNG of a smooth background with one coloured rectangle (the "product"), and that rectangle's box."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(40, 200, 3)
    image = (base + 30 * np.sin(xx[..., None] / 17 + rng.uniform(0, 6, 3)) * np.cos(yy[..., None] / 23)).clip(0, 255)
    x0, y0 = int(rng.integers(10, width // 2)), int(rng.integers(10, height // 2))
    x1, y1 = x0 + int(rng.integers(30, width // 2 - 5)), y0 + int(rng.integers(30, height // 2 - 5))
    image[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    image[y0 + 5 : y1 - 5 : 6, x0 + 3 : x1 - 3] = 255 - image[y0, x0]  # stripes: detail for the reference to show
    return encode(Image.fromarray(image.astype(np.uint8)), "PNG"), (x0, y0, x1, y1)


def write_manifest(folder: Path, rows: int, *, val: int = 0, broken: int = 0, seed: int = 0) -> Path:
    """`rows` good train rows (box regions), `val` val rows, and `broken` train rows whose image is not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(rows + val):
        data, box = object_photo(seed * 1000 + i)
        path = folder / f"img{i}.png"
        path.write_bytes(data)
        records.append({"image_uri": str(path), "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
                        "split": "val" if i >= rows else "train"})
    for i in range(broken):
        path = folder / f"broken{i}.png"
        path.write_bytes(b"not an image")
        records.append({"image_uri": str(path), "x0": 1, "y0": 1, "x1": 20, "y1": 20, "split": "train"})
    manifest = folder / "train.parquet"
    pq.write_table(pa.Table.from_pylist(records), manifest)
    return manifest


def tiny_config(manifest: Path, output: Path | str, **sections) -> TrainConfig:
    """A tiny-model training config at 64 px that a CPU runs in seconds."""
    data = {
        "run_id": "t",
        "manifest_uri": str(manifest),
        "output_uri": str(output),
        "model": {"source": "tiny"},
        "data": {"resolution": 64},
        "train": {"steps": 4, "batch_size": 2, "reference_dropout": 0.5},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "checkpoint": {"every_steps": 2},
        "log": {"progress_every": 1, "sheet_every": 1000, "sheet_pairs": 2, "sheet_steps": 2},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainConfig.model_validate(data)
