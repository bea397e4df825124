"""CPU stage before the model: decode a (scene, product) pair and build the model's inputs.

`prepare_pair` is pure (bytes in, arrays out) and raises only `PairError`. The scene is decoded at reduced
resolution when it is a JPEG and the context window keeps at least `resolution` pixels across (draft decoding), and
only the window is cropped, resampled and turned upright.

Everything but the hint and the reference depends on the scene and its region only. The runner orders pairs by
scene, so the process keeps that part for the last scene it prepared (`PREPARE_SCENES`, a `LastEntry`): the next
pair with byte-identical scene and mask data, the same box and the same settings decodes only its product."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.core.errors import unexpected_as_internal
from pipeline.core.last_entry import LastEntry
from pipeline.imaging.collage import hint_rectangle, make_hint, make_reference
from pipeline.imaging.composite import check_encodable
from pipeline.imaging.crop import crop_resized
from pipeline.imaging.decode import (
    load_rgb,
    open_image,
    read_orientation,
    transpose_upright,
    upright_size,
)
from pipeline.imaging.geometry import Box, context_window, draft_factor, upright_to_stored_box
from pipeline.imaging.masks import build_region
from pipeline.imaging.settings import ImageSettings
from pipeline.inference.step_times import StepTimes


@dataclass
class PreparedPair:
    scene_crop: np.ndarray  # uint8 (R, R, 3): the scene inside `window`, resampled to the model resolution
    mask_crop: np.ndarray  # bool (R, R), True = fill (any overlap with the region)
    hint: np.ndarray  # uint8 (R, R, 3): black, with the product in the largest rectangle inside mask_crop
    reference: np.ndarray  # uint8 (S, S, 3): the product on a white square
    window: tuple[int, int, int, int]  # square, in upright scene pixels; may extend beyond the image (padded)
    scene_size: tuple[int, int]  # (W, H) of the upright scene
    # `Region.pack()` of the region to fill: what `composite_pair(region=...)` needs instead of the mask image, so the
    # postprocess stage does not decode the mask again.
    region: bytes = b""


def prepare_pair(
    scene_bytes: bytes,
    product_bytes: bytes,
    *,
    mask_bytes: bytes | None,
    box: tuple | None,
    settings: ImageSettings,
    times: StepTimes | None = None,
) -> PreparedPair:
    """Decode, find the context window, crop, and build hint and reference. Raises only `PairError`.
    `times`, when given, gets the CPU time of each step (decode, mask, collage).

    Cheap checks first (headers, box or mask, output limits), pixels after. The window is
    `context_window(bbox, margin=context_margin, min_side=resolution, min_margin=dilate_px)`, so paste-back
    never needs pixels outside it.
    """
    with unexpected_as_internal("preparing the pair"):
        return _prepare(scene_bytes, product_bytes, mask_bytes=mask_bytes, box=box, settings=settings,
                        times=times if times is not None else StepTimes())


def _box_key(box: object) -> tuple | None:
    return None if box is None else tuple(box)  # type: ignore[arg-type]


def _prepare(
    scene_bytes: bytes,
    product_bytes: bytes,
    *,
    mask_bytes: bytes | None,
    box: object,
    settings: ImageSettings,
    times: StepTimes,
) -> PreparedPair:
    res = settings.resolution
    # Without a memo hit the scene's work is split around the product's header check, keeping the order of checks
    # (cheap header and region checks of both images before the scene's pixels are decoded).
    key = (bytes(scene_bytes), None if mask_bytes is None else bytes(mask_bytes), _box_key(box), settings)
    prepared = PREPARE_SCENES.get(key)
    if prepared is None:
        with times.step("decode"):
            scene = open_image(scene_bytes, max_pixels=settings.max_pixels, what="scene")
            orientation = read_orientation(scene, what="scene")
        stored_size = scene.size
        size = upright_size(stored_size, orientation)
        check_encodable(size, settings.output_format)
        with times.step("mask"):
            region = build_region(size, mask_bytes=mask_bytes, box=box, max_pixels=settings.max_pixels)
    with times.step("decode"):
        product = open_image(product_bytes, max_pixels=settings.max_pixels, what="product")
        product_orientation = read_orientation(product, what="product")

    if prepared is None:
        window = context_window(
            region.bbox, size, margin=settings.context_margin, min_side=res, min_margin=settings.dilate_px
        )
        scene_crop = _scene_crop(scene, stored_size, orientation, window, res, times)
        with times.step("mask"):
            prepared = PreparedScene(
                scene_crop=scene_crop,
                mask_crop=region.resized_crop(window, res),
                window=window,
                scene_size=size,
                region=region.pack(),
            )
        PREPARE_SCENES.put(key, prepared)
    mask_crop = prepared.mask_crop

    # Decode the product only as large as its two uses need (hint rectangle and reference), by JPEG draft.
    with times.step("collage"):
        rect = hint_rectangle(mask_crop, upright_size(product.size, product_orientation))
    needed = max(rect[2] - rect[0], rect[3] - rect[1], settings.reference_size)
    with times.step("decode"):
        product_rgb, _ = load_rgb(product, reduction=draft_factor(max(product.size), needed), what="product")
        product_rgb = transpose_upright(product_rgb, product_orientation)
    with times.step("collage"):
        hint = make_hint(product_rgb, mask_crop, rect=rect)
        reference = make_reference(product_rgb, settings.reference_size)
    return PreparedPair(
        scene_crop=prepared.scene_crop.copy(),  # the memo keeps its own arrays: callers may write into theirs
        mask_crop=mask_crop.copy(),
        hint=hint,
        reference=reference,
        window=prepared.window,
        scene_size=prepared.scene_size,
        region=prepared.region,
    )


@dataclass(frozen=True)
class PreparedScene:
    """The product-independent part of a `PreparedPair` (same fields)."""

    scene_crop: np.ndarray
    mask_crop: np.ndarray
    window: tuple[int, int, int, int]
    scene_size: tuple[int, int]
    region: bytes


# The scene `prepare_pair` (stage `prepare_row`) prepared last in this process.
PREPARE_SCENES: LastEntry[PreparedScene] = LastEntry()


def _scene_crop(
    scene: Image.Image, stored_size: tuple[int, int], orientation: int, window: Box, res: int, times: StepTimes
) -> np.ndarray:
    """The window of the scene at res x res, upright: decoded (drafted), cropped and resampled in the stored
    orientation, and only the small result transposed."""
    with times.step("decode"):
        rgb, factor = load_rgb(scene, reduction=draft_factor(window[2] - window[0], res), what="scene")
    x0, y0, x1, y1 = upright_to_stored_box(window, stored_size, orientation)
    with times.step("collage"):
        crop = crop_resized(rgb, (x0 / factor, y0 / factor, x1 / factor, y1 / factor), (res, res))
        return np.array(transpose_upright(crop, orientation))
