"""Paste the generated crop back into the full-resolution scene, and encode the result."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from pipeline.core.errors import IMAGE_TOO_LARGE, WRITE_ERROR, PairError
from pipeline.imaging.color_match import ColorMatch, match_colors
from pipeline.imaging.geometry import Box, intersect
from pipeline.imaging.masks import Region, feathered_alpha
from pipeline.imaging.seams import SeamMetrics, seam_metrics

# Largest width or height each encoder can write.
MAX_SIDE = {"jpeg": 65_535, "png": 2**31 - 1, "webp": 16_383}
# Each encoder at its fastest effort: higher efforts cost the CPU stage several times more for files a few percent
# smaller (benchmarks/README.md, "Encoder effort").
_PNG_COMPRESS_LEVEL = 1
_WEBP_METHOD = 0
_WEBP_LOSSLESS_EFFORT = 0  # with lossless=True Pillow's `quality` is the effort, 0-100


def paste_back(
    scene: Image.Image,
    generated: np.ndarray,
    window: Box,
    region: Region,
    *,
    dilate_px: int,
    feather_px: int,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
    color_match: ColorMatch = "none",
    measure: bool = False,
) -> SeamMetrics | None:
    """Blend `generated` (uint8 (h, w, 3), covering `window` of the upright RGB `scene`) into `scene` IN PLACE.

    Alpha is `feathered_alpha` of the region: exactly 0 outside the region dilated by `dilate_px`, so those
    scene pixels are untouched, bit for bit. Only the region's bbox grown by `dilate_px` (inside the image
    and the window) is resampled and blended; nothing scene-sized is copied.

    `color_match` (`color_match.COLOR_MATCH_METHODS`) first matches the crop's colours to the scene's, fitted on the
    crop's context (`color_match.match_colors`); with too little context (a region filling its window) the crop is
    pasted as it is, as with `none`.
    Returns the pair's `SeamMetrics` when `measure` (`SeamMetrics.nothing_pasted()` when the box is empty), else
    None.
    """
    wx0, wy0, wx1, wy1 = window
    work = paste_box(scene.size, window, region, dilate_px=dilate_px)
    if work is None:
        return SeamMetrics.nothing_pasted() if measure else None
    x0, y0, x1, y1 = work
    inside = region.crop_image(work)
    alpha = feathered_alpha(inside, dilate_px=dilate_px, feather_px=feather_px)
    gen_h, gen_w = generated.shape[:2]
    scale_x, scale_y = gen_w / (wx1 - wx0), gen_h / (wy1 - wy0)
    source = ((x0 - wx0) * scale_x, (y0 - wy0) * scale_y, (x1 - wx0) * scale_x, (y1 - wy0) * scale_y)
    crop = Image.fromarray(generated)
    if color_match != "none":
        part = _read_part(source, (x1 - x0, y1 - y0), crop.size)
        matched = match_colors(color_match, scene, generated, window, paste=work, alpha=alpha, part=part)
        if matched is not None:
            crop = matched
            source = (source[0] - part[0], source[1] - part[1], source[2] - part[0], source[3] - part[1])
    patch = crop.resize((x1 - x0, y1 - y0), resample, box=source)
    before = scene.crop(work) if measure else None
    scene.paste(patch, (x0, y0), alpha)
    if before is None:
        return None
    # Compare colours over about one crop pixel, in blocks that fit inside the band.
    block = min(round(min(1 / scale_x, 1 / scale_y)), dilate_px // 2)
    return seam_metrics(before, scene.crop(work), patch, alpha, inside, block=block)


def _read_part(source: tuple[float, float, float, float], size: tuple[int, int], crop_size: tuple[int, int]) -> Box:
    """The pixels of a crop of `crop_size` that resampling its `source` box to `size` reads: colour matching costs
    per pixel, and the crop's context is never pasted."""
    sx0, sy0, sx1, sy1 = source
    # Pillow's widest filter (Lanczos) reads 3 pixels each side, times the reduction factor when shrinking.
    reach_x = 3 * max(1.0, (sx1 - sx0) / size[0]) + 1
    reach_y = 3 * max(1.0, (sy1 - sy0) / size[1]) + 1
    return (
        max(0, math.floor(sx0 - reach_x)), max(0, math.floor(sy0 - reach_y)),
        min(crop_size[0], math.ceil(sx1 + reach_x)), min(crop_size[1], math.ceil(sy1 + reach_y)),
    )


def paste_box(size: tuple[int, int], window: Box, region: Region, *, dilate_px: int) -> Box | None:
    """The rectangle of the scene of `size` (W, H) that `paste_back` may change: the region's bbox grown by
    `dilate_px`, inside the image and the window (None when empty). Every pixel outside it stays as it was."""
    bx0, by0, bx1, by1 = region.bbox
    grown = (bx0 - dilate_px, by0 - dilate_px, bx1 + dilate_px, by1 + dilate_px)
    work = intersect(grown, (0, 0, size[0], size[1]))
    return work and intersect(work, window)


def check_encodable(size: tuple[int, int], fmt: str) -> None:
    """`image_too_large` when the encoder for `fmt` cannot write an image of `size` (W, H)."""
    if fmt not in MAX_SIDE:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(MAX_SIDE)}")
    limit = MAX_SIDE[fmt]
    if max(size) > limit:
        raise PairError(
            IMAGE_TOO_LARGE,
            f"the output would be {size[0]}x{size[1]}, but {fmt} allows at most {limit} pixels per side; "
            "choose another output_format or a smaller scene",
        )


def encode_image(
    image: Image.Image | np.ndarray, fmt: str, quality: int, *, icc_profile: bytes | None = None
) -> bytes:
    """Encode an RGB image (or uint8 (H, W, 3) array) as `fmt` ("jpeg" | "png" | "webp").

    jpeg: `quality`, Pillow's default 4:2:0 subsampling, baseline. png: lossless, zlib level 1, `quality`
    ignored. webp: lossy at `quality`, lossless when quality == 100 (the only way to ask for lossless WebP, so
    that "equal outside the mask" holds exactly), fastest method. `icc_profile` is embedded when given.
    No EXIF is written: pixels are upright already. Encoder failures are `write_error`.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    check_encodable(image.size, fmt)
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if fmt == "jpeg":
        options.update(format="JPEG", quality=quality)
    elif fmt == "png":
        options.update(format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    elif quality == 100:  # webp (check_encodable knows only the three formats)
        options.update(format="WEBP", lossless=True, quality=_WEBP_LOSSLESS_EFFORT, method=_WEBP_METHOD)
    else:
        options.update(format="WEBP", quality=quality, method=_WEBP_METHOD)
    buffer = io.BytesIO()
    try:
        image.save(buffer, **options)
    except (OSError, ValueError) as exc:
        raise PairError(
            WRITE_ERROR, f"encoding the {image.width}x{image.height} output as {fmt} failed: {exc}"
        ) from exc
    return buffer.getvalue()
