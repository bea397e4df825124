"""A small procedurally drawn catalogue and scene set: the demo's input, and the tests' and benchmarks'.

Nothing is downloaded. Products are simple objects on white (several shapes, colours, sizes and surface textures),
drawn with their silhouette so they can also be rendered into a room (`procedural`). Scenes are rooms (wall,
floor texture, window, light from one side) with a region to fill on the floor against the wall, given half by mask
images and half by boxes, so both contract forms are exercised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from pipeline.core.storage import S3Config, join, write_bytes
from pipeline.synthetic.images import Painter, ellipse_mask, encode, random_colour, shade, texture

PRODUCT_KINDS = ("lamp", "vase", "chair", "frame", "table", "plant", "bottle", "clock", "sofa", "stool")
CATEGORIES = ("lighting", "decor")
_KIND_CATEGORY = {
    "lamp": "lighting", "vase": "decor", "chair": "decor", "frame": "decor", "table": "decor", "plant": "decor",
    "bottle": "decor", "clock": "decor", "sofa": "decor", "stool": "decor",
}
FLOORS = ("plain", "planks", "tiles")


@dataclass(frozen=True)
class SampleSet:
    catalogue_uri: str
    scenes_uri: str
    product_ids: list[str]
    scene_ids: list[str]


@dataclass(frozen=True)
class Lighting:
    """How a room is lit: what a product placed in it must take on (`pipeline.synthetic.procedural.render_product`)."""

    side: int  # -1: light from the left, +1: from the right
    gain: float  # overall brightness factor
    tint: tuple[float, float, float]  # per-channel factor (warm or cool light)


@dataclass(frozen=True)
class Room:
    image: Image.Image
    box: tuple[int, int, int, int]  # the region to fill, on the floor against the wall
    horizon: int  # first floor row
    lighting: Lighting


def _product_size(rng: random.Random) -> tuple[int, int]:
    w = rng.randrange(240, 400)
    return w, round(w * rng.uniform(0.7, 1.5))


def draw_product_layers(
    kind: str, rng: random.Random, size: tuple[int, int] | None = None
) -> tuple[Image.Image, Image.Image]:
    """The product photo (RGB on white) and its silhouette (L, 255 = object), `size` drawn at random when None."""
    w, h = size if size is not None else _product_size(rng)
    p = Painter((w, h))
    c = random_colour(rng)
    body = texture(rng, (w, h), c)
    dark = shade(random_colour(rng), 0.5)
    if kind == "lamp":
        p.shape("polygon", [(w * 0.3, h * 0.1), (w * 0.7, h * 0.1), (w * 0.85, h * 0.4), (w * 0.15, h * 0.4)], body)
        p.shape("rectangle", [w * 0.47, h * 0.4, w * 0.53, h * 0.85], dark)
        p.shape("ellipse", [w * 0.3, h * 0.82, w * 0.7, h * 0.92], dark)
    elif kind == "vase":
        p.shape("ellipse", [w * 0.2, h * 0.35, w * 0.8, h * 0.9], body)
        p.shape("rectangle", [w * 0.38, h * 0.1, w * 0.62, h * 0.45], body)
    elif kind == "chair":
        p.shape("rectangle", [w * 0.2, h * 0.1, w * 0.3, h * 0.9], body)
        p.shape("rectangle", [w * 0.2, h * 0.5, w * 0.8, h * 0.58], body)
        p.shape("rectangle", [w * 0.7, h * 0.5, w * 0.8, h * 0.9], body)
    elif kind == "frame":
        p.shape("rectangle", [w * 0.1, h * 0.1, w * 0.9, h * 0.9], c)
        p.shape("rectangle", [w * 0.2, h * 0.2, w * 0.8, h * 0.8], texture(rng, (w, h), random_colour(rng)))
    elif kind == "table":
        p.shape("rectangle", [w * 0.08, h * 0.3, w * 0.92, h * 0.4], body)
        p.shape("rectangle", [w * 0.15, h * 0.4, w * 0.22, h * 0.9], dark)
        p.shape("rectangle", [w * 0.78, h * 0.4, w * 0.85, h * 0.9], dark)
    elif kind == "plant":
        p.shape("polygon", [(w * 0.3, h * 0.6), (w * 0.7, h * 0.6), (w * 0.62, h * 0.92), (w * 0.38, h * 0.92)], body)
        leaf = shade((40 + rng.randrange(60), 110 + rng.randrange(80), 40 + rng.randrange(50)), 1.0)
        for x0, y0, x1, y1 in ((0.15, 0.15, 0.55, 0.62), (0.45, 0.1, 0.85, 0.62), (0.3, 0.05, 0.7, 0.55)):
            p.shape("ellipse", [w * x0, h * y0, w * x1, h * y1], leaf)
    elif kind == "bottle":
        p.shape("rounded_rectangle", [w * 0.3, h * 0.35, w * 0.7, h * 0.92], body)
        p.shape("rectangle", [w * 0.43, h * 0.1, w * 0.57, h * 0.38], body)
        p.shape("rectangle", [w * 0.41, h * 0.06, w * 0.59, h * 0.12], dark)
    elif kind == "clock":
        p.shape("ellipse", [w * 0.1, h * 0.1, w * 0.9, h * 0.9], c)
        p.shape("ellipse", [w * 0.18, h * 0.18, w * 0.82, h * 0.82], texture(rng, (w, h), shade(c, 1.6)))
        p.shape("rectangle", [w * 0.48, h * 0.25, w * 0.52, h * 0.52], dark)
        p.shape("rectangle", [w * 0.48, h * 0.48, w * 0.72, h * 0.52], dark)
    elif kind == "sofa":
        p.shape("rounded_rectangle", [w * 0.08, h * 0.3, w * 0.92, h * 0.75], body)
        p.shape("rounded_rectangle", [w * 0.02, h * 0.45, w * 0.18, h * 0.8], body)
        p.shape("rounded_rectangle", [w * 0.82, h * 0.45, w * 0.98, h * 0.8], body)
        p.shape("rectangle", [w * 0.12, h * 0.8, w * 0.17, h * 0.9], dark)
        p.shape("rectangle", [w * 0.83, h * 0.8, w * 0.88, h * 0.9], dark)
    elif kind == "stool":
        p.shape("ellipse", [w * 0.2, h * 0.2, w * 0.8, h * 0.36], body)
        p.shape("polygon", [(w * 0.3, h * 0.3), (w * 0.36, h * 0.3), (w * 0.28, h * 0.9), (w * 0.22, h * 0.9)], dark)
        p.shape("polygon", [(w * 0.64, h * 0.3), (w * 0.7, h * 0.3), (w * 0.78, h * 0.9), (w * 0.72, h * 0.9)], dark)
    else:
        raise ValueError(f"unknown product kind {kind!r} (known: {', '.join(PRODUCT_KINDS)})")
    return p.rgb, p.alpha


def draw_product(kind: str, rng: random.Random, size: tuple[int, int] = (320, 400)) -> Image.Image:
    """The product photo: the object on white."""
    return draw_product_layers(kind, rng, size)[0]


def draw_room(rng: random.Random, size: tuple[int, int]) -> Room:
    """A room lit from one side (wall shading, floor texture, window, skirting) and the region to fill."""
    w, h = size
    img = Image.new("RGB", size)
    d = ImageDraw.Draw(img)
    side = rng.choice((-1, 1))
    gain = rng.uniform(0.75, 1.15)
    warmth = rng.uniform(-0.12, 0.12)
    light = Lighting(side=side, gain=gain, tint=(1 + warmth, 1.0, 1 - warmth))
    wall, floor = random_colour(rng), random_colour(rng)
    horizon = int(h * rng.uniform(0.55, 0.7))
    # The wall: brighter towards the light and towards the top, in columns of 8 px (smooth enough, cheap to draw).
    for x in range(0, w, 8):
        fx = 0.82 + 0.18 * (x / w if side > 0 else 1 - x / w)
        col = tuple(v * gain * t * fx for v, t in zip(wall, light.tint, strict=True))
        for y0 in range(0, horizon, 16):
            fy = 0.85 + 0.15 * (y0 / max(1, horizon))
            d.rectangle([x, y0, x + 7, min(horizon, y0 + 15)], fill=shade(col, fy))  # type: ignore[arg-type]
    lit_floor = shade(tuple(v * t for v, t in zip(floor, light.tint, strict=True)), gain)  # type: ignore[arg-type]
    d.rectangle([0, horizon, w, h], fill=lit_floor)
    pattern = rng.choice(FLOORS)
    step = max(8, int(w * rng.uniform(0.05, 0.12)))
    line = shade(lit_floor, 0.8)
    if pattern == "planks":
        for y in range(horizon, h, max(4, step // 2)):
            d.line([(0, y), (w, y)], fill=line, width=2)
    elif pattern == "tiles":
        for y in range(horizon, h, step):
            for x in range(0, w, step):
                if (x // step + (y - horizon) // step) % 2:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=shade(lit_floor, 0.88))
    d.rectangle([0, horizon - max(2, h // 60), w, horizon], fill=shade(random_colour(rng), 0.8))  # skirting
    wx = int(w * (rng.uniform(0.55, 0.72) if side > 0 else rng.uniform(0.03, 0.2)))
    d.rectangle([wx, int(h * 0.1), wx + int(w * 0.25), int(h * 0.4)], fill=(200, 225, 245), outline=(90, 90, 90))
    bw, bh = int(w * rng.uniform(0.2, 0.35)), int(h * rng.uniform(0.3, 0.45))
    x0 = rng.randrange(0, w - bw)
    y1 = min(h - 1, horizon + int(h * 0.15))
    return Room(img, (x0, max(0, y1 - bh), x0 + bw, y1), horizon, light)


def draw_scene(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A room and the box of the region to fill (on the floor, against the wall)."""
    room = draw_room(rng, size)
    return room.image, room.box


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
        write_bytes(uri, encode(draw_product_layers(kind, rng)[0], "JPEG", quality=92), s3)
        products["product_id"].append(pid)
        products["image_uri"].append(uri)
        products["category"].append(_KIND_CATEGORY[kind])

    scenes: dict[str, list] = {name: [] for name in SCENES_SCHEMA.names}
    for j in range(n_scenes):
        sid = f"room-{j:03d}"
        img, box = draw_scene(rng, scene_size)
        uri = join(root_uri, "scenes", f"{sid}.jpg")
        write_bytes(uri, encode(img, "JPEG", quality=92), s3)
        mask_uri = None
        if j % 2:  # every other scene names its region by a mask image instead of a box
            mask_uri = join(root_uri, "masks", f"{sid}.png")
            write_bytes(mask_uri, encode(ellipse_mask(box, scene_size), "PNG"), s3)
        scenes["scene_id"].append(sid)
        scenes["image_uri"].append(uri)
        scenes["mask_uri"].append(mask_uri)
        for name, value in zip(("x0", "y0", "x1", "y1"), box, strict=True):
            scenes[name].append(None if mask_uri else value)
        scenes["category"].append(CATEGORIES[j % len(CATEGORIES)])

    catalogue_uri = join(root_uri, "catalogue.parquet")
    scenes_uri = join(root_uri, "scenes.parquet")
    write_bytes(catalogue_uri, parquet_bytes(pa.table(products)), s3)
    write_bytes(scenes_uri, parquet_bytes(pa.table(scenes, schema=SCENES_SCHEMA)), s3)
    return SampleSet(catalogue_uri, scenes_uri, products["product_id"], scenes["scene_id"])


SCENES_SCHEMA = pa.schema(
    [("scene_id", pa.string()), ("image_uri", pa.string()), ("mask_uri", pa.string()), ("x0", pa.int32()),
     ("y0", pa.int32()), ("x1", pa.int32()), ("y1", pa.int32()), ("category", pa.string())]
)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
