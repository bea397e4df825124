"""One training pair from one manifest row: decode, region, augment, then the model inputs built as at inference.

The crop, the fill mask, the hint and the reference come from the same `pipeline.imaging` functions that
`inference.preprocess.prepare_pair` uses (context window, windowed resampling, mask crop, collage, reference), so a
model trains on exactly what the sampler will give it. Pure: bytes and a NumPy generator in, arrays out; every
failure is a `PairError` with a stable reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.imaging.collage import hint_rectangle, make_hint, make_reference
from pipeline.imaging.crop import crop_resized
from pipeline.imaging.decode import (
    decode_image,
    load_rgb,
    open_image,
    read_orientation,
    transpose_upright,
    upright_size,
)
from pipeline.imaging.geometry import context_window
from pipeline.imaging.masks import Region, build_region
from pipeline.train.augment import augment_reference, grow_box, outline_mask
from pipeline.train.config import TrainDataConfig


@dataclass(frozen=True)
class TrainPair:
    """The model's inputs for one pair at resolution R, and the target (the scene crop itself)."""

    scene: np.ndarray  # uint8 (R, R, 3): the unmasked crop, the denoising target
    mask: np.ndarray  # bool (R, R): True = region to fill
    hint: np.ndarray  # uint8 (R, R, 3): the collage of the reference source inside the mask
    reference: np.ndarray  # uint8 (S, S, 3): the product on white, as make_reference builds it


def pair_rng(seed: int, epoch: int, row: int) -> np.random.Generator:
    """The generator for one (epoch, row): the same pair is augmented the same way by any worker, on any restart."""
    return np.random.default_rng([seed, epoch, row])


def make_pair(
    image_bytes: bytes,
    *,
    mask_bytes: bytes | None,
    box: tuple | None,
    reference_bytes: bytes | None,
    rng: np.random.Generator,
    cfg: TrainDataConfig,
) -> TrainPair:
    """The pair for one manifest row. Without `reference_bytes` the reference is the region's own augmented crop."""
    scene = open_image(image_bytes, max_pixels=cfg.max_pixels, what="image")
    orientation = read_orientation(scene, what="image")
    size = upright_size(scene.size, orientation)
    region = build_region(size, mask_bytes=mask_bytes, box=box, max_pixels=cfg.max_pixels)
    rgb, _ = load_rgb(scene, what="image")
    rgb = transpose_upright(rgb, orientation)

    fill_draw = rng.uniform(0.0, 1.0)
    if reference_bytes is not None:
        product = decode_image(reference_bytes, max_pixels=cfg.max_pixels, what="reference")
    else:
        product = augment_reference(
            _padded_crop(rgb, region.bbox, cfg.reference_padding),
            rng,
            flip_p=cfg.flip_p,
            rotate_deg=cfg.rotate_deg,
            blur_p=cfg.blur_p,
            perspective_p=cfg.perspective_p,
        )
    fill = _fill_region(region, size, rng, fill_draw, cfg)

    res = cfg.resolution
    window = context_window(fill.bbox, size, margin=cfg.context_margin, min_side=res, min_margin=cfg.dilate_px)
    scene_crop = np.asarray(crop_resized(rgb, window, (res, res)))
    mask_crop = fill.resized_crop(window, res)
    rect = hint_rectangle(mask_crop, product.size)
    return TrainPair(
        scene=scene_crop,
        mask=mask_crop,
        hint=make_hint(product, mask_crop, rect=rect),
        reference=make_reference(product, cfg.reference_size),
    )


def _padded_crop(rgb: Image.Image, bbox: tuple[int, int, int, int], padding: float) -> Image.Image:
    x0, y0, x1, y1 = bbox
    px, py = round((x1 - x0) * padding / 2), round((y1 - y0) * padding / 2)
    return rgb.crop((max(0, x0 - px), max(0, y0 - py), min(rgb.width, x1 + px), min(rgb.height, y1 + py)))


def _fill_region(
    region: Region, size: tuple[int, int], rng: np.random.Generator, draw: float, cfg: TrainDataConfig
) -> Region:
    """The region the model fills: the box grown at random, or a jittered outline between the box and the grown
    box. With both augmentations off it is the row's region as given (a mask stays that mask)."""
    grown = grow_box(region.bbox, size, rng, cfg.mask_grow)
    if cfg.mask_grow == 0 and cfg.irregular_mask_p == 0:
        return region
    if draw < cfg.irregular_mask_p:
        return Region.from_mask(outline_mask(region.bbox, grown, size, rng))
    return Region.from_box(grown, size)
