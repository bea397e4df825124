"""CPU stage after the model: paste the generated crop into the full-resolution scene and encode it.

`composite_pair` is pure (bytes and arrays in, bytes out) and raises only `PairError`. It decodes the scene again at
full resolution (upright), takes the region `prepare_pair` packed (or rebuilds it from the same mask or box), blends
the generated crop in with a feathered alpha that is exactly 0 outside the dilated region, and encodes.

A catalogue run pairs each scene with many products, and the runner orders pairs by scene, so one task often
composites the same scene several times in a row. The process keeps the last decoded scene (`COMPOSITE_SCENES`, a
`LastEntry`): the next pair with byte-identical scene data skips the full-resolution decode (the largest single cost
of this stage), pastes into the cached pixels, encodes, and puts back the few pixels it changed. Outputs are the
same bytes either way."""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

from pipeline.core.errors import INTERNAL_ERROR, MODEL_ERROR, PairError, unexpected_as_internal
from pipeline.core.last_entry import LastEntry
from pipeline.imaging.composite import check_encodable, encode_image, paste_back, paste_box
from pipeline.imaging.decode import (
    load_rgb,
    open_image,
    read_orientation,
    rgb_icc_profile,
    transpose_upright,
    upright_size,
)
from pipeline.imaging.geometry import Box
from pipeline.imaging.masks import Region, build_region
from pipeline.imaging.seams import SeamMetrics
from pipeline.imaging.settings import ImageSettings
from pipeline.inference.step_times import StepTimes


def composite_pair(
    scene_bytes: bytes,
    generated: np.ndarray,
    window: tuple[int, int, int, int],
    *,
    mask_bytes: bytes | None = None,
    box: tuple | None = None,
    region: bytes | None = None,
    settings: ImageSettings,
    times: StepTimes | None = None,
) -> tuple[bytes, tuple[int, int], SeamMetrics]:
    """Returns (encoded image, (W, H) of the upright scene, the paste-back's `SeamMetrics`). Raises only `PairError`.

    `generated` is uint8 (h, w, 3) covering `window` (normally R x R from the model); `window` is the one
    `prepare_pair` returned. The region is `region`, the `PreparedPair.region` bytes of the same pair (the
    pipeline's way: the mask is not decoded again), or else rebuilt from exactly one of `mask_bytes` and `box`.
    The output keeps the scene's RGB ICC profile, and has no EXIF. The crop's colours are matched to the scene's first
    (`settings.color_match`), and the seam, the region and the outside are measured at the output's resolution.
    `times`, when given, gets the CPU time of each step (decode, mask, paste_back, encode).
    """
    with unexpected_as_internal("compositing the pair"):
        return _composite(
            scene_bytes, generated, window, mask_bytes=mask_bytes, box=box, region=region, settings=settings,
            times=times if times is not None else StepTimes(),
        )


def _small_enough_to_keep(image: Image.Image) -> bool:
    return image.width * image.height <= KEPT_MAX_PIXELS


def _check_generated(generated: object) -> np.ndarray:
    if (
        not isinstance(generated, np.ndarray)
        or generated.dtype != np.uint8
        or generated.ndim != 3
        or generated.shape[2] != 3
        or generated.shape[0] == 0
        or generated.shape[1] == 0
    ):
        got = f"{generated.dtype} {generated.shape}" if isinstance(generated, np.ndarray) else type(generated).__name__
        raise PairError(MODEL_ERROR, f"the generated image must be a uint8 array (h, w, 3), got {got}")
    return np.ascontiguousarray(generated)


def _check_window(window: object, bbox: Box) -> Box:
    try:
        x0, y0, x1, y1 = (int(v) for v in window)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise PairError(INTERNAL_ERROR, f"the window must be 4 integers, got {window!r}") from exc
    if not (x0 <= bbox[0] and y0 <= bbox[1] and x1 >= bbox[2] and y1 >= bbox[3]):
        raise PairError(
            INTERNAL_ERROR,
            f"the window {(x0, y0, x1, y1)} does not contain the region's bbox {bbox}: the mask or box must be "
            "the one the pair was prepared with",
        )
    return (x0, y0, x1, y1)


def _composite(
    scene_bytes: bytes,
    generated: np.ndarray,
    window: object,
    *,
    mask_bytes: bytes | None,
    box: object,
    region: bytes | None,
    settings: ImageSettings,
    times: StepTimes,
) -> tuple[bytes, tuple[int, int], SeamMetrics]:
    generated = _check_generated(generated)
    with times.step("decode"):
        scene = open_image(scene_bytes, max_pixels=settings.max_pixels, what="scene")
        orientation = read_orientation(scene, what="scene")
    size = upright_size(scene.size, orientation)
    check_encodable(size, settings.output_format)
    if region:
        if mask_bytes is not None or box is not None:
            raise ValueError("give the region either packed (region) or as mask_bytes / box, not both")
        with times.step("mask"):
            found = unpack_region(region)
        if found.size != size:
            raise PairError(
                INTERNAL_ERROR, f"the packed region is for a {found.size} scene, this scene is {size}: wrong pair"
            )
    else:
        with times.step("mask"):
            found = build_region(size, mask_bytes=mask_bytes, box=box, max_pixels=settings.max_pixels)
    window = _check_window(window, found.bbox)
    icc_profile = rgb_icc_profile(scene)

    def decode() -> Image.Image:
        with times.step("decode"):
            return transpose_upright(load_rgb(scene, what="scene")[0], orientation)

    with COMPOSITE_SCENES.borrow(bytes(scene_bytes), decode, keep=_small_enough_to_keep) as upright:
        with times.step("paste_back"):
            changed = paste_box(upright.size, window, found, dilate_px=settings.dilate_px)
            saved = upright.crop(changed) if changed else None
        try:
            with times.step("paste_back"):
                metrics = paste_back(upright, generated, window, found, dilate_px=settings.dilate_px,
                                     feather_px=settings.feather_px, color_match=settings.color_match, measure=True)
            with times.step("encode"):
                encoded = encode_image(upright, settings.output_format, settings.output_quality,
                                       icc_profile=icc_profile)
        finally:
            if saved is not None:
                with times.step("paste_back"):
                    upright.paste(saved, changed[:2])  # the cached scene is the scene again
    assert metrics is not None
    return encoded, size, metrics


# Scenes larger than this are decoded for their pair only (a 12 MP scene is 48 MB as RGB pixels).
KEPT_MAX_PIXELS = 25_000_000
# The scene `composite_pair` (stage `composite_row`) decoded last in this process.
COMPOSITE_SCENES: LastEntry[Image.Image] = LastEntry()


def unpack_region(data: bytes) -> Region:
    """`Region.unpack`, with malformed bytes as this pair's `internal_error` (they come from our own stage)."""
    try:
        return Region.unpack(data)
    except (ValueError, struct.error) as exc:
        raise PairError(INTERNAL_ERROR, f"the packed region cannot be read: {exc}") from exc
