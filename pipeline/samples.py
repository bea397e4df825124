"""A small procedurally drawn catalogue and scene set: the demo's input, and the tests' and benchmarks'.

Nothing is downloaded. Products are simple objects on white; scenes are rooms with a region to fill on the
floor or the wall, given half by mask images and half by boxes, so both contract forms are exercised.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from pipeline.config import S3Config
from pipeline.storage import join, write_bytes

PRODUCT_KINDS = ("lamp", "vase", "chair", "frame")
CATEGORIES = ("lighting", "decor")
_KIND_CATEGORY = {"lamp": "lighting", "vase": "decor", "chair": "decor", "frame": "decor"}


@dataclass(frozen=True)
class SampleSet:
    catalogue_uri: str
    scenes_uri: str
    product_ids: list[str]
    scene_ids: list[str]


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(30, 220), rng.randrange(30, 220), rng.randrange(30, 220)


def draw_product(kind: str, rng: random.Random, size: tuple[int, int] = (320, 400)) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    c = _colour(rng)
    if kind == "lamp":
        d.polygon([(w * 0.3, h * 0.1), (w * 0.7, h * 0.1), (w * 0.85, h * 0.4), (w * 0.15, h * 0.4)], fill=c)
        d.rectangle([w * 0.47, h * 0.4, w * 0.53, h * 0.85], fill=(60, 60, 60))
        d.ellipse([w * 0.3, h * 0.82, w * 0.7, h * 0.92], fill=(60, 60, 60))
    elif kind == "vase":
        d.ellipse([w * 0.2, h * 0.35, w * 0.8, h * 0.9], fill=c)
        d.rectangle([w * 0.38, h * 0.1, w * 0.62, h * 0.45], fill=c)
    elif kind == "chair":
        d.rectangle([w * 0.2, h * 0.1, w * 0.3, h * 0.9], fill=c)
        d.rectangle([w * 0.2, h * 0.5, w * 0.8, h * 0.58], fill=c)
        d.rectangle([w * 0.7, h * 0.5, w * 0.8, h * 0.9], fill=c)
    else:  # frame
        d.rectangle([w * 0.1, h * 0.1, w * 0.9, h * 0.9], fill=c)
        d.rectangle([w * 0.2, h * 0.2, w * 0.8, h * 0.8], fill=_colour(rng))
    return img


def draw_scene(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A room and the box of the region to fill (on the floor, against the wall)."""
    w, h = size
    img = Image.new("RGB", size)
    d = ImageDraw.Draw(img)
    wall, floor = _colour(rng), _colour(rng)
    horizon = int(h * rng.uniform(0.55, 0.7))
    for y in range(horizon):  # a soft vertical gradient on the wall
        f = 0.8 + 0.2 * y / horizon
        d.line([(0, y), (w, y)], fill=tuple(int(v * f) for v in wall))
    d.rectangle([0, horizon, w, h], fill=floor)
    wx = int(w * rng.uniform(0.05, 0.6))
    d.rectangle([wx, int(h * 0.1), wx + int(w * 0.25), int(h * 0.4)], fill=(200, 225, 245), outline=(90, 90, 90))
    bw, bh = int(w * rng.uniform(0.2, 0.35)), int(h * rng.uniform(0.3, 0.45))
    x0 = rng.randrange(0, w - bw)
    y1 = min(h - 1, horizon + int(h * 0.15))
    return img, (x0, max(0, y1 - bh), x0 + bw, y1)


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_sample_set(
    root_uri: str,
    *,
    n_products: int = 6,
    n_scenes: int = 4,
    scene_size: tuple[int, int] = (640, 480),
    seed: int = 0,
    s3: S3Config | None = None,
) -> SampleSet:
    """Draw the set, write its images and its two Parquet manifests under `root_uri`."""
    rng = random.Random(seed)
    products: dict[str, list] = {"product_id": [], "image_uri": [], "category": []}
    for i in range(n_products):
        kind = PRODUCT_KINDS[i % len(PRODUCT_KINDS)]
        pid = f"{kind}-{i:03d}"
        uri = join(root_uri, "products", f"{pid}.jpg")
        write_bytes(uri, _encode(draw_product(kind, rng), "JPEG"), s3)
        products["product_id"].append(pid)
        products["image_uri"].append(uri)
        products["category"].append(_KIND_CATEGORY[kind])

    scenes: dict[str, list] = {name: [] for name in _SCENES_SCHEMA.names}
    for j in range(n_scenes):
        sid = f"room-{j:03d}"
        img, box = draw_scene(rng, scene_size)
        uri = join(root_uri, "scenes", f"{sid}.jpg")
        write_bytes(uri, _encode(img, "JPEG"), s3)
        mask_uri = None
        if j % 2:  # every other scene names its region by a mask image instead of a box
            mask = Image.new("L", scene_size, 0)
            ImageDraw.Draw(mask).ellipse(box, fill=255)
            mask_uri = join(root_uri, "masks", f"{sid}.png")
            write_bytes(mask_uri, _encode(mask, "PNG"), s3)
        scenes["scene_id"].append(sid)
        scenes["image_uri"].append(uri)
        scenes["mask_uri"].append(mask_uri)
        for name, value in zip(("x0", "y0", "x1", "y1"), box, strict=True):
            scenes[name].append(None if mask_uri else value)
        scenes["category"].append(CATEGORIES[j % len(CATEGORIES)])

    catalogue_uri = join(root_uri, "catalogue.parquet")
    scenes_uri = join(root_uri, "scenes.parquet")
    write_bytes(catalogue_uri, _parquet(pa.table(products)), s3)
    write_bytes(scenes_uri, _parquet(pa.table(scenes, schema=_SCENES_SCHEMA)), s3)
    return SampleSet(catalogue_uri, scenes_uri, products["product_id"], scenes["scene_id"])


_SCENES_SCHEMA = pa.schema(
    [("scene_id", pa.string()), ("image_uri", pa.string()), ("mask_uri", pa.string()), ("x0", pa.int32()),
     ("y0", pa.int32()), ("x1", pa.int32()), ("y1", pa.int32()), ("category", pa.string())]
)


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
