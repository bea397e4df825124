"""The pair-level API the Ray stages call: prepare_pair and composite_pair."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from pipeline.core.errors import (
    DECODE_ERROR,
    IMAGE_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_BOX,
    MASK_EMPTY,
    MASK_OUT_OF_BOUNDS,
    MASK_SIZE_MISMATCH,
    MODEL_ERROR,
    PairError,
)
from pipeline.imaging.crop import crop_resized
from pipeline.imaging.decode import TRANSPOSE, decode_image
from pipeline.imaging.masks import Region
from pipeline.imaging.settings import ImageSettings
from pipeline.inference import preprocess
from pipeline.inference.postprocess import composite_pair
from pipeline.inference.preprocess import prepare_pair
from pipeline.synthetic.images import encode, exif_with_orientation, noise, photo, png_header_only
from tests.imaging._helpers import brute_dilate

RES = 64
SETTINGS = ImageSettings(resolution=RES, reference_size=32, output_format="png", color_match="none")
MAGENTA = (255, 0, 255)
# The inverse of each orientation's transpose: what a camera stored, given the upright picture.
STORE = {1: None, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def stored_jpeg(upright: Image.Image, orientation: int, **options) -> bytes:
    """JPEG bytes whose pixels are stored turned, with the EXIF orientation that turns them upright."""
    store = STORE[orientation]
    stored = upright if store is None else upright.transpose(TRANSPOSE[store])
    return encode(stored, "JPEG", quality=95, exif=exif_with_orientation(orientation), **options)


def product_jpeg(width=120, height=80) -> bytes:
    return encode(photo(width, height, seed=9), "JPEG", quality=90)


def pair_error(fn, *args, **kwargs) -> PairError:
    with pytest.raises(PairError) as excinfo:
        fn(*args, **kwargs)
    assert excinfo.value.message
    return excinfo.value


def prepare(scene, product=None, *, mask_bytes=None, box=None, settings=SETTINGS):
    return prepare_pair(scene, product or product_jpeg(), mask_bytes=mask_bytes, box=box, settings=settings)


def magenta(res=RES) -> np.ndarray:
    out = np.zeros((res, res, 3), dtype=np.uint8)
    out[...] = MAGENTA
    return out


def box_mask(size, box) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


# prepare_pair


def test_prepare_with_box_shapes_and_invariants():
    scene = encode(photo(300, 200), "JPEG")
    pair = prepare(scene, box=(120, 80, 160, 110))
    assert pair.scene_crop.shape == (RES, RES, 3) and pair.scene_crop.dtype == np.uint8
    assert pair.mask_crop.shape == (RES, RES) and pair.mask_crop.dtype == bool
    assert pair.hint.shape == (RES, RES, 3) and pair.hint.dtype == np.uint8
    assert pair.reference.shape == (32, 32, 3) and pair.reference.dtype == np.uint8
    assert pair.scene_size == (300, 200)
    x0, y0, x1, y1 = pair.window
    assert x1 - x0 == y1 - y0 == 64 and x0 <= 120 and y0 <= 80 and x1 >= 160 and y1 >= 110
    assert np.array_equal(
        pair.mask_crop, Region.from_box((120, 80, 160, 110), (300, 200)).resized_crop(pair.window, RES)
    )
    painted = pair.hint.any(axis=2)
    assert painted.any() and not (painted & ~pair.mask_crop).any()
    assert pair.scene_crop.flags.writeable


def test_prepare_mask_and_box_paths_agree():
    scene = encode(photo(300, 200), "JPEG")
    box = (100, 40, 220, 150)
    by_box = prepare(scene, box=box)
    mask = encode(Image.fromarray(box_mask((300, 200), box).view(np.uint8) * 255), "PNG")
    by_mask = prepare(scene, mask_bytes=mask)
    assert by_box.window == by_mask.window
    assert np.array_equal(by_box.scene_crop, by_mask.scene_crop)
    assert not (by_mask.mask_crop & ~by_box.mask_crop).any()
    assert by_mask.mask_crop.sum() >= 0.9 * by_box.mask_crop.sum()


@pytest.mark.parametrize("mask_given,box", [(False, None), (True, (1, 1, 5, 5))], ids=["neither", "both"])
def test_exactly_one_of_mask_and_box(mask_given, box):
    scene = encode(photo(64, 64), "PNG")
    mask = encode(Image.new("L", (64, 64), 255), "PNG") if mask_given else None
    assert pair_error(prepare, scene, mask_bytes=mask, box=box).reason == INVALID_BOX


def test_region_errors():
    scene = encode(photo(100, 80), "JPEG")
    assert pair_error(prepare, scene, box=(200, 10, 300, 20)).reason == MASK_OUT_OF_BOUNDS
    assert pair_error(prepare, scene, box=(50, 10, 40, 20)).reason == INVALID_BOX
    assert pair_error(prepare, scene, box=(float("nan"), 1, 2, 3)).reason == INVALID_BOX
    black = encode(Image.new("L", (100, 80), 0), "PNG")
    assert pair_error(prepare, scene, mask_bytes=black).reason == MASK_EMPTY
    small = encode(Image.new("L", (50, 40), 255), "PNG")
    assert pair_error(prepare, scene, mask_bytes=small).reason == MASK_SIZE_MISMATCH


def test_all_white_mask_regenerates_the_whole_image():
    scene = encode(photo(100, 80), "JPEG")
    pair = prepare(scene, mask_bytes=encode(Image.new("L", (100, 80), 255), "PNG"))
    assert pair.window == (0, -10, 100, 90)
    assert pair.mask_crop[7:57].all() and not pair.mask_crop[:6].any() and not pair.mask_crop[58:].any()


def test_decode_errors_name_the_image():
    good = encode(photo(64, 64), "JPEG")
    error = pair_error(prepare, b"", box=(1, 1, 5, 5))
    assert error.reason == DECODE_ERROR and "scene" in error.message
    error = pair_error(prepare, good, good[:200], box=(1, 1, 5, 5))
    assert error.reason == DECODE_ERROR and "product" in error.message
    error = pair_error(prepare, good, b"not an image", box=(1, 1, 5, 5))
    assert error.reason == DECODE_ERROR and "product" in error.message
    error = pair_error(prepare, good, mask_bytes=b"\x89PNG\r\n\x1a\n broken")
    assert error.reason == DECODE_ERROR and "mask" in error.message


def test_size_limits_checked_before_decoding():
    huge = png_header_only(20_000, 20_000)  # 400 MP: refused on the header
    assert pair_error(prepare, huge, box=(1, 1, 5, 5)).reason == IMAGE_TOO_LARGE
    wide = png_header_only(20_000, 10)  # fine for PNG, too wide for WebP: refused before any decoding
    webp = ImageSettings(resolution=RES, output_format="webp")
    assert pair_error(prepare, wide, box=(1, 1, 5, 5), settings=webp).reason == IMAGE_TOO_LARGE
    product = png_header_only(9_000, 9_000)
    limited = ImageSettings(resolution=RES, max_pixels=50_000_000)
    assert pair_error(prepare, encode(photo(64, 64), "PNG"), product, box=(1, 1, 5, 5), settings=limited).reason == (
        IMAGE_TOO_LARGE
    )


def test_unexpected_failures_become_internal_errors(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(preprocess, "make_reference", broken)
    error = pair_error(prepare, encode(photo(64, 64), "PNG"), box=(1, 1, 5, 5))
    assert error.reason == INTERNAL_ERROR and "boom" in error.message


def marker_scene(width: int, height: int, box) -> Image.Image:
    img = photo(width, height, seed=11)
    img.paste((0, 0, 0), box)
    return img


def dark_centroid(arr: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(arr.sum(axis=2) < 60)
    return float(xs.mean()), float(ys.mean())


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("scene_size,box", [((960, 720), (300, 200, 600, 500)), ((500, 300), (20, 30, 90, 120))])
def test_scene_crop_is_the_upright_window(orientation, scene_size, box):
    """Whatever the EXIF orientation and the draft factor, the crop shows the upright scene's window: compared
    with decoding at full size and resampling the window the obvious way."""
    upright = marker_scene(*scene_size, (box[0] + 40, box[1] + 50, box[0] + 60, box[1] + 80))
    data = stored_jpeg(upright, orientation)
    pair = prepare(data, box=box)
    assert pair.scene_size == scene_size
    expected = np.asarray(crop_resized(decode_image(data, max_pixels=10**8), pair.window, (RES, RES)))
    got = pair.scene_crop
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 4
    ex, ey = dark_centroid(expected)
    gx, gy = dark_centroid(got)
    assert abs(ex - gx) < 0.75 and abs(ey - gy) < 0.75


def test_one_pixel_scene():
    scene = encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")
    pair = prepare(scene, box=(0, 0, 1, 1))
    assert pair.window == (0, 0, 1, 1) and pair.mask_crop.all()
    assert (pair.scene_crop == (10, 20, 30)).all()
    out, size, _ = composite_pair(scene, magenta(), pair.window, mask_bytes=None, box=(0, 0, 1, 1), settings=SETTINGS)
    assert size == (1, 1) and np.asarray(Image.open(io.BytesIO(out)))[0, 0].tolist() == list(MAGENTA)


# composite_pair


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("orientation", [1, 6])
def test_composite_png_equals_scene_outside_the_dilated_mask(orientation):
    box = (100, 60, 170, 140)
    upright = Image.fromarray(noise(260, 180, seed=orientation))
    scene = stored_jpeg(upright, orientation)
    pair = prepare(scene, box=box)
    out, size, _ = composite_pair(scene, magenta(), pair.window, mask_bytes=None, box=box, settings=SETTINGS)
    assert size == (260, 180) and out.startswith(b"\x89PNG")
    result, original = decoded(out), np.asarray(decode_image(scene, max_pixels=10**8))
    mask = box_mask(size, box)
    outside = ~brute_dilate(mask, SETTINGS.dilate_px)
    assert np.array_equal(result[outside], original[outside])
    assert (result[mask] == MAGENTA).all()


def test_composite_mask_at_the_border_with_window_beyond_it_lossless_webp():
    yy, xx = np.mgrid[0:120, 0:200]
    mask = ((xx - 190) ** 2 + (yy - 60) ** 2 <= 55**2) | (yy >= 115)  # touches the right and bottom borders
    mask_bytes = encode(Image.fromarray(mask.view(np.uint8) * 255), "PNG")
    scene = encode(Image.fromarray(noise(200, 120, seed=3)), "PNG")
    settings = ImageSettings(resolution=RES, output_format="webp", output_quality=100, color_match="none")
    pair = prepare(scene, mask_bytes=mask_bytes, settings=settings)
    assert pair.window[1] < 0 and pair.window[3] > 120  # taller than the image: padded
    out, _, _ = composite_pair(scene, magenta(), pair.window, mask_bytes=mask_bytes, box=None, settings=settings)
    result, original = decoded(out), np.asarray(decode_image(scene, max_pixels=10**8))
    outside = ~brute_dilate(mask, settings.dilate_px)
    assert np.array_equal(result[outside], original[outside])
    assert (result[mask] == MAGENTA).all()


def test_composite_jpeg_output_close_outside_the_mask_and_keeps_icc():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    box = (60, 40, 120, 100)
    scene = encode(photo(240, 160, seed=4), "JPEG", quality=95, icc_profile=srgb)
    settings = ImageSettings(resolution=RES)
    pair = prepare(scene, box=box, settings=settings)
    out, _, _ = composite_pair(scene, magenta(), pair.window, mask_bytes=None, box=box, settings=settings)
    img = Image.open(io.BytesIO(out))
    assert img.format == "JPEG" and img.info.get("icc_profile") == srgb and not img.getexif()
    outside = ~brute_dilate(box_mask((240, 160), box), 12)
    diff = np.abs(decoded(out).astype(int) - np.asarray(decode_image(scene, max_pixels=10**8)).astype(int))
    assert diff[outside].mean() < 2


def test_composite_rejects_bad_model_output_and_windows():
    scene = encode(photo(100, 80), "PNG")
    box = (40, 30, 60, 50)
    window = prepare(scene, box=box).window
    for generated in (np.zeros((RES, RES), np.uint8), np.zeros((RES, RES, 3), np.float32), None):
        error = pair_error(composite_pair, scene, generated, window, mask_bytes=None, box=box, settings=SETTINGS)
        assert error.reason == MODEL_ERROR
    error = pair_error(composite_pair, scene, magenta(), (0, 0, 10, 10), mask_bytes=None, box=box, settings=SETTINGS)
    assert error.reason == INTERNAL_ERROR
    error = pair_error(composite_pair, scene, magenta(), window, mask_bytes=None, box=None, settings=SETTINGS)
    assert error.reason == INVALID_BOX


def test_settings_validation():
    for bad in (
        {"resolution": 500},
        {"resolution": 0},
        {"feather_px": 9},
        {"dilate_px": -1},
        {"output_format": "gif"},
        {"output_quality": 0},
        {"context_margin": float("nan")},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ImageSettings(**bad)
    assert ImageSettings(output_format="webp", output_quality=100).lossless
    assert ImageSettings().output_extension == "jpg"
