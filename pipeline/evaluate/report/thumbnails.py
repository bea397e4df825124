"""Thumbnails for the review page, written under `report/thumbs/` with keys made from the run's own keys.

The page shows these, never the full images (a page of 200 pairs would otherwise load gigabytes); each thumbnail
links to its full image. A scene's thumbnail has the region to fill outlined. Made by Ray Data CPU tasks, like the
pipeline's other image work; an image that cannot be read is that thumbnail's `failed` row and the page says so.
"""

from __future__ import annotations

import io
import logging
import traceback
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from PIL import Image, ImageFilter

from pipeline.core.errors import INTERNAL_ERROR, PairError
from pipeline.core.storage import S3Config, join, read_bytes, write_bytes
from pipeline.imaging.decode import decode_image
from pipeline.imaging.masks import build_region
from pipeline.inference.keys import escape_segment

log = logging.getLogger(__name__)

THUMBS_PER_BLOCK = 32
OUTLINE = (255, 40, 40)
TASK_SCHEMA = pa.schema([
    ("key", pa.string()),  # relative to report/
    ("uri", pa.string()),
    ("mask_uri", pa.string()),  # with box: outline the region (scenes only)
    ("box", pa.list_(pa.int64())),
    ("outline", pa.bool_()),
])


def scene_key(scene_id: str) -> str:
    return f"thumbs/scenes/{escape_segment(scene_id)}.jpg"


def product_key(product_id: str) -> str:
    return f"thumbs/products/{escape_segment(product_id)}.jpg"


def output_key(image_key: str) -> str:
    """`images/<variant>/<product>/<scene>.<ext>` -> `thumbs/images/<variant>/<product>/<scene>.jpg`."""
    return f"thumbs/{image_key.rsplit('.', 1)[0]}.jpg"


def thumbnail(image: Image.Image, px: int) -> Image.Image:
    """`image` shrunk to fit px x px (aspect kept, never enlarged)."""
    small = image.convert("RGB").copy()
    small.thumbnail((px, px), Image.Resampling.LANCZOS)
    return small


def outline_region(small: Image.Image, region_mask: Image.Image) -> Image.Image:
    """`small` with the edge of `region_mask` (the full-size "L" region, 255 inside) drawn on it, two pixels wide."""
    mask = region_mask.resize(small.size, Image.Resampling.BOX).point(lambda v: 255 if v >= 128 else 0)
    if not mask.getbbox():  # a region thinner than a thumbnail pixel: mark where it is
        mask = region_mask.resize(small.size, Image.Resampling.BOX).point(lambda v: 255 if v > 0 else 0)
    edge = np.asarray(mask) > np.asarray(mask.filter(ImageFilter.MinFilter(3)))
    edge = np.asarray(Image.fromarray(edge.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))) > 0
    pixels = np.array(small)
    pixels[edge] = OUTLINE
    return Image.fromarray(pixels)


def _outlined(small: Image.Image, size: tuple[int, int], row: dict[str, Any], max_pixels: int,
              s3: S3Config | None) -> Image.Image:
    """The scene's thumbnail with its region outlined; without an outline when the region is unusable (its pairs
    failed for that reason, and the page says so)."""
    try:
        mask_bytes = read_bytes(row["mask_uri"], s3) if row["mask_uri"] else None
        box = tuple(int(v) for v in row["box"]) if row["box"] is not None else None
        region = build_region(size, mask_bytes=mask_bytes, box=box, max_pixels=max_pixels)
    except PairError:
        return small
    return outline_region(small, region.crop_image((0, 0, *size)))


def make_thumbnail(row: dict[str, Any], report_uri: str, px: int, max_pixels: int,
                   s3: S3Config | None) -> dict[str, Any]:
    """Read, shrink (and outline) one image and write its thumbnail; a failure is the row's status."""
    out = {"key": row["key"], "status": "ok", "message": ""}
    try:
        image = decode_image(read_bytes(row["uri"], s3), max_pixels=max_pixels, what="image")
        small = thumbnail(image, px)
        if row["outline"]:
            small = _outlined(small, image.size, row, max_pixels, s3)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=85)
        write_bytes(join(report_uri, row["key"]), buf.getvalue(), s3, content_type="image/jpeg")
    except PairError as exc:
        out.update(status="failed", message=f"{exc.reason}: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - a bug: this thumbnail's row, with the traceback in the worker's log
        log.error("unexpected error making the thumbnail of %s:\n%s", row["uri"],
                  "".join(traceback.format_exception(exc)))
        out.update(status="failed", message=f"{INTERNAL_ERROR}: {type(exc).__name__}: {exc}")
    return out


def write_thumbnails(tasks: list[dict], report_uri: str, *, px: int, max_pixels: int,
                     s3: S3Config | None) -> dict[str, str]:
    """Make every thumbnail (each key once); returns key -> "" when written, else the reason it is not."""
    unique = list({t["key"]: t for t in tasks}.values())
    if not unique:
        return {}
    table = pa.Table.from_pylist(unique, schema=TASK_SCHEMA)
    blocks = [table.slice(i, THUMBS_PER_BLOCK) for i in range(0, table.num_rows, THUMBS_PER_BLOCK)]
    dataset = ray.data.from_arrow(blocks).map(
        make_thumbnail, fn_kwargs={"report_uri": report_uri, "px": px, "max_pixels": max_pixels, "s3": s3})
    results = {t["key"]: "no result from the thumbnail pass" for t in unique}
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for key, status, message in zip(*(batch.column(c).to_pylist() for c in ("key", "status", "message")),
                                        strict=True):
            results[key] = "" if status == "ok" else message
    return results
