"""Procedural training pairs with ground truth: a product photo, a room, and the product rendered into that room.

The demo model learns from these and is measured on them (`benchmarks.demo_quality`). A pair is a pure function
of its seed, so held-out pairs are pairs whose seeds no training set uses (`HELD_OUT_SEED`). The product is placed
where the pipeline's crude collage puts it (`pipeline.imaging.collage.hint_rectangle` of the region), and rendered
as the room would show it: without the photo's white background, in the room's light (brightness, colour, the lit
side) and with a contact shadow on the floor. Outside the region the target equals the room.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFilter

from pipeline.core.storage import S3Config, join, write_bytes
from pipeline.imaging.collage import hint_rectangle
from pipeline.synthetic.images import ellipse_mask, encode
from pipeline.synthetic.samples import PRODUCT_KINDS, Lighting, draw_product_layers, draw_room, parquet_bytes

# Seeds of held-out pairs start here; training sets use seeds below it.
HELD_OUT_SEED = 1_000_000
SCENE_SIZE = (640, 480)

MANIFEST_SCHEMA = pa.schema(
    [("image_uri", pa.string()), ("mask_uri", pa.string()), ("x0", pa.int32()), ("y0", pa.int32()),
     ("x1", pa.int32()), ("y1", pa.int32()), ("reference_uri", pa.string()), ("split", pa.string()),
     ("seed", pa.int64())]
)


@dataclass(frozen=True)
class ProceduralPair:
    seed: int
    kind: str
    product: Image.Image  # RGB: the product photo, the object on white
    room: Image.Image  # RGB: the scene as the pipeline receives it
    target: Image.Image  # RGB: the room with the product rendered into the region (ground truth)
    box: tuple[int, int, int, int]  # the region's bounding box
    mask: Image.Image | None  # L: the region as a mask image (an ellipse), or None when the box is the region
    placement: tuple[int, int, int, int]  # where the product was rendered (the collage's rectangle)

    @property
    def region(self) -> np.ndarray:
        """bool (H, W): the region to fill."""
        return region_array(self.box, self.mask, self.room.size)


def region_array(box: tuple[int, int, int, int], mask: Image.Image | None, size: tuple[int, int]) -> np.ndarray:
    """bool (H, W) of the scene of `size`: the mask's pixels >= 128 (the contract's rule), else the box."""
    if mask is not None:
        return np.asarray(mask) >= 128
    region = np.zeros((size[1], size[0]), bool)
    x0, y0, x1, y1 = box
    region[y0:y1, x0:x1] = True
    return region


def render_product(
    room: Image.Image,
    product: Image.Image,
    silhouette: Image.Image,
    rect: tuple[int, int, int, int],
    region: np.ndarray,
    lighting: Lighting,
) -> Image.Image:
    """`room` with the product inside `rect`: lit as the room is, over its contact shadow, clipped to `region`."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    obj = np.asarray(product.resize((w, h), Image.Resampling.LANCZOS), np.float32)
    alpha = np.asarray(silhouette.resize((w, h), Image.Resampling.LANCZOS), np.float32) / 255
    # The lit side is brighter: a ramp across the object towards the light, then the room's gain and tint.
    ramp = np.linspace(0.8, 1.1, w, dtype=np.float32)
    ramp = ramp if lighting.side > 0 else ramp[::-1]
    obj = obj * ramp[None, :, None] * lighting.gain * np.asarray(lighting.tint, np.float32)

    out = np.asarray(room, np.float32).copy()
    clip = region.astype(np.float32)
    # Contact shadow: a blurred ellipse under the object's base, thrown away from the light.
    rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
    base = y0 + (int(rows[-1]) if rows.size else h - 1)
    shadow = Image.new("L", room.size, 0)
    sx = x0 + w / 2 - lighting.side * 0.12 * w
    ImageDraw.Draw(shadow).ellipse([sx - 0.5 * w, base - 0.06 * h, sx + 0.5 * w, base + 0.06 * h], fill=255)
    shade = np.asarray(shadow.filter(ImageFilter.GaussianBlur(max(1.0, 0.04 * w))), np.float32) / 255
    out *= (1 - 0.45 * shade * clip)[..., None]

    a = alpha * clip[y0:y1, x0:x1]
    patch = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = patch * (1 - a[..., None]) + obj * a[..., None]
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def make_pair(seed: int, size: tuple[int, int] = SCENE_SIZE) -> ProceduralPair:
    """The pair of `seed`: a random product kind, room and region (a box or, half the time, an ellipse mask)."""
    rng = random.Random(seed)
    kind = rng.choice(PRODUCT_KINDS)
    product, silhouette = draw_product_layers(kind, rng)
    room = draw_room(rng, size)
    mask = ellipse_mask(room.box, size) if rng.random() < 0.5 else None
    region = region_array(room.box, mask, size)
    rect = hint_rectangle(region, product.size)
    target = render_product(room.image, product, silhouette, rect, region, room.lighting)
    return ProceduralPair(seed, kind, product, room.image, target, room.box, mask, rect)


def held_out_seeds(n: int) -> list[int]:
    """Seeds of the first `n` held-out pairs (no training set draws them)."""
    return [HELD_OUT_SEED + i for i in range(n)]


def write_training_set(
    root_uri: str,
    *,
    n_train: int,
    n_val: int = 4,
    first_seed: int = 0,
    size: tuple[int, int] = SCENE_SIZE,
    s3: S3Config | None = None,
) -> str:
    """Write `n_train` training pairs (seeds first_seed..) and `n_val` held-out ones as a training manifest.

    The manifest is the training job's (`image_uri` the target, the region as `mask_uri` or a box, `reference_uri`
    the product photo, `split`, and each row's `seed`). Returns the manifest's URI.
    """
    if first_seed + n_train > HELD_OUT_SEED:
        raise ValueError(f"training seeds must stay below {HELD_OUT_SEED} (held-out pairs start there)")
    rows: dict[str, list] = {name: [] for name in MANIFEST_SCHEMA.names}
    seeds = [("train", first_seed + i) for i in range(n_train)] + [("val", s) for s in held_out_seeds(n_val)]
    for split, seed in seeds:
        pair = make_pair(seed, size)
        name = f"{seed:07d}"
        image_uri = join(root_uri, "images", f"{name}.png")
        write_bytes(image_uri, encode(pair.target, "PNG"), s3)
        reference_uri = join(root_uri, "products", f"{name}.jpg")
        write_bytes(reference_uri, encode(pair.product, "JPEG", quality=92), s3)
        mask_uri = None
        if pair.mask is not None:
            mask_uri = join(root_uri, "masks", f"{name}.png")
            write_bytes(mask_uri, encode(pair.mask, "PNG"), s3)
        rows["image_uri"].append(image_uri)
        rows["mask_uri"].append(mask_uri)
        for key, value in zip(("x0", "y0", "x1", "y1"), pair.box, strict=True):
            rows[key].append(None if mask_uri else value)
        rows["reference_uri"].append(reference_uri)
        rows["split"].append(split)
        rows["seed"].append(seed)
    manifest_uri = join(root_uri, "train.parquet")
    write_bytes(manifest_uri, parquet_bytes(pa.table(rows, schema=MANIFEST_SCHEMA)), s3)
    return manifest_uri


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.synthetic.procedural", description="Write a procedural "
                                "training set (targets, products, masks) and its training manifest, train.parquet.")
    p.add_argument("out", help="folder or s3:// prefix")
    p.add_argument("--pairs", type=int, required=True, help="training pairs (seeds --first-seed onwards)")
    p.add_argument("--val", type=int, default=4, help="held-out pairs for the training job's contact sheet")
    p.add_argument("--first-seed", type=int, default=0)
    args = p.parse_args(argv)
    print(write_training_set(args.out, n_train=args.pairs, n_val=args.val, first_seed=args.first_seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
