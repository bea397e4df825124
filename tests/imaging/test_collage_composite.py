from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from pipeline.core.errors import IMAGE_TOO_LARGE, PairError
from pipeline.imaging.collage import hint_rectangle, make_hint, make_reference
from pipeline.imaging.composite import check_encodable, encode_image, paste_back
from pipeline.imaging.crop import crop_resized
from pipeline.imaging.geometry import context_window, largest_inscribed_rectangle
from pipeline.imaging.masks import Region
from pipeline.synthetic.images import noise, photo

from ._helpers import brute_dilate

RED = (255, 0, 0)
MAGENTA = (255, 0, 255)


# Crop


def test_crop_resized_identity_inside_the_image():
    img = Image.fromarray(noise(50, 40))
    out = crop_resized(img, (5, 7, 25, 27), (20, 20))
    assert np.array_equal(np.asarray(out), np.asarray(img)[7:27, 5:25])


def test_crop_resized_pads_with_edge_pixels():
    arr = noise(10, 8)
    out = crop_resized(Image.fromarray(arr), (-3, -2, 9, 10), (12, 12))
    expected = np.pad(arr, ((2, 4), (3, 0), (0, 0)), mode="edge")[0:12, 0:12]
    assert np.array_equal(np.asarray(out), expected)


@pytest.mark.parametrize(
    "box",
    [
        (100.0, 80.0, 500.0, 480.0),
        (-150.5, -20.25, 430.0, 559.75),
        (300.0, 300.0, 700.0, 700.0),
        (13.3, 7.7, 61.1, 55.5),
    ],
)
def test_crop_resized_matches_a_padded_full_resize(box):
    """Against the obvious (slow) way: pad the whole image by edge replication, then resample the box."""
    arr = np.asarray(photo(600, 500, seed=3))
    pad = 200
    padded = Image.fromarray(np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
    shifted = tuple(v + pad for v in box)
    expected = np.asarray(padded.resize((64, 64), Image.Resampling.BICUBIC, box=shifted)).astype(int)
    got = np.asarray(crop_resized(Image.fromarray(arr), box, (64, 64))).astype(int)
    assert np.abs(got - expected).mean() < 1.5  # pre-reduction (box filter) differs only slightly
    assert np.abs(got - expected).max() < 40


def test_crop_resized_rejects_a_box_outside_the_image():
    with pytest.raises(ValueError):
        crop_resized(Image.new("RGB", (10, 10)), (20, 20, 30, 30), (4, 4))


# Hint and reference


def rect_mask(size, rect):
    mask = np.zeros((size, size), dtype=bool)
    x0, y0, x1, y1 = rect
    mask[y0:y1, x0:x1] = True
    return mask


def nonzero_box(arr):
    ys, xs = np.nonzero(arr.any(axis=2))
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def test_hint_geometry_in_a_rectangular_mask():
    mask = rect_mask(64, (10, 20, 50, 40))  # 40 x 20
    product = Image.new("RGB", (300, 300), RED)  # square: 20 x 20, centred
    hint = make_hint(product, mask)
    assert hint.shape == (64, 64, 3) and hint.dtype == np.uint8
    assert nonzero_box(hint) == (20, 20, 40, 40)
    assert (hint[20:40, 20:40] == RED).all()


@pytest.mark.parametrize("product_size", [(300, 100), (100, 300), (123, 457), (1, 1)])
def test_hint_inside_mask_aspect_kept_and_centred(product_size):
    yy, xx = np.mgrid[0:96, 0:96]
    mask = ((xx - 40) ** 2 + (yy - 50) ** 2 <= 30**2) | ((xx > 60) & (yy < 20))  # a disc and a rectangle
    product = Image.new("RGB", product_size, RED)
    hint = make_hint(product, mask)
    painted = hint.any(axis=2)
    assert painted.any() and not (painted & ~mask).any()
    x0, y0, x1, y1 = nonzero_box(hint)
    assert (x0, y0, x1, y1) == hint_rectangle(mask, product_size)
    lx0, ly0, lx1, ly1 = largest_inscribed_rectangle(mask)
    w, h = x1 - x0, y1 - y0
    assert w == lx1 - lx0 or h == ly1 - ly0  # as large as the inscribed rectangle allows
    assert abs((x0 - lx0) - (lx1 - x1)) <= 1 and abs((y0 - ly0) - (ly1 - y1)) <= 1
    aspect = product_size[0] / product_size[1]
    if w > 1 and h > 1:
        assert abs(w / h - aspect) <= aspect * (1 / w + 1 / h)


@pytest.mark.parametrize(
    "product_size,painted",
    [((200, 100), (0, 56, 224, 168)), ((100, 200), (56, 0, 168, 224)), ((50, 50), (0, 0, 224, 224))],
)
def test_reference_pads_to_square_with_white(product_size, painted):
    ref = make_reference(Image.new("RGB", product_size, RED), 224)
    assert ref.shape == (224, 224, 3) and ref.dtype == np.uint8
    is_red = (ref == RED).all(axis=2)
    x0, y0, x1, y1 = painted
    assert is_red[y0:y1, x0:x1].all() and is_red.sum() == (x1 - x0) * (y1 - y0)
    assert (ref[~is_red] == 255).all()


# Paste-back


def check_paste(scene_arr, out_arr, mask, dilate_px=8, feather_px=4):
    dilated = brute_dilate(mask, dilate_px)
    assert np.array_equal(out_arr[~dilated], scene_arr[~dilated])  # bit for bit outside the dilated mask
    if 2 * feather_px <= dilate_px:
        assert (out_arr[mask] == MAGENTA).all()  # fully generated on the mask


def paste(scene_arr, region, *, res=32, margin=0.25, dilate_px=8, feather_px=4):
    height, width = scene_arr.shape[:2]
    window = context_window(region.bbox, (width, height), margin=margin, min_side=res, min_margin=dilate_px)
    scene = Image.fromarray(scene_arr.copy())
    generated = np.zeros((res, res, 3), dtype=np.uint8)
    generated[...] = MAGENTA
    paste_back(scene, generated, window, region, dilate_px=dilate_px, feather_px=feather_px)
    return np.asarray(scene), window


def test_paste_back_box_in_the_middle():
    scene = noise(200, 150)
    region = Region.from_box((80, 60, 120, 90), (200, 150))
    out, _ = paste(scene, region)
    mask = np.zeros((150, 200), dtype=bool)
    mask[60:90, 80:120] = True
    check_paste(scene, out, mask)
    ring = brute_dilate(mask, 8) & ~mask
    assert not np.array_equal(out[ring], scene[ring])  # the feather blends in the ring


def test_paste_back_irregular_mask():
    yy, xx = np.mgrid[0:150, 0:200]
    mask = (xx - 100) ** 2 / 900 + (yy - 70) ** 2 / 400 <= 1
    scene = noise(200, 150, seed=5)
    out, _ = paste(scene, Region.from_mask(mask))
    check_paste(scene, out, mask)


@pytest.mark.parametrize(
    "box", [(0, 40, 30, 80), (170, 40, 200, 80), (50, 0, 90, 20), (50, 130, 90, 150), (0, 0, 5, 5)]
)
def test_paste_back_mask_at_the_border(box):
    scene = noise(200, 150, seed=1)
    region = Region.from_box(box, (200, 150))
    out, _ = paste(scene, region)
    mask = np.zeros((150, 200), dtype=bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    check_paste(scene, out, mask)


def test_paste_back_window_beyond_the_border():
    scene = noise(120, 80, seed=2)
    box = (10, 5, 110, 75)
    region = Region.from_box(box, (120, 80))
    out, window = paste(scene, region, res=40)
    assert window[1] < 0 and window[3] > 80  # side 120 > height 80: padded above and below
    mask = np.zeros((80, 120), dtype=bool)
    mask[5:75, 10:110] = True
    check_paste(scene, out, mask)


def test_paste_back_whole_image_mask():
    scene = noise(60, 40, seed=4)
    out, window = paste(scene, Region.from_mask(np.ones((40, 60), dtype=bool)))
    assert window == (0, -10, 60, 50)
    assert (out == MAGENTA).all()


def test_paste_back_places_the_generated_pixels_where_the_window_says():
    """A generated crop equal to the scene's own window, resampled, reproduces the scene inside the mask."""
    scene = np.asarray(photo(300, 200, seed=7))
    region = Region.from_box((100, 50, 180, 120), (300, 200))
    window = context_window(region.bbox, (300, 200), margin=0.25, min_side=64, min_margin=8)
    generated = np.asarray(crop_resized(Image.fromarray(scene), window, (64, 64)))
    out = Image.fromarray(scene.copy())
    paste_back(out, generated, window, region, dilate_px=8, feather_px=4)
    diff = np.abs(np.asarray(out).astype(int) - scene.astype(int))[50:120, 100:180]
    assert diff.mean() < 3  # a misplaced window would show as a large difference on this smooth picture


# Encoding


def decode_bytes(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_encode_formats():
    arr = noise(64, 48)
    png = encode_image(arr, "png", 95)
    assert png.startswith(b"\x89PNG") and np.array_equal(decode_bytes(png), arr)
    lossless = encode_image(arr, "webp", 100)
    assert lossless[8:12] == b"WEBP" and np.array_equal(decode_bytes(lossless), arr)
    smooth = np.asarray(photo(64, 48))
    for fmt, quality in (("webp", 90), ("jpeg", 95)):
        data = encode_image(Image.fromarray(smooth), fmt, quality)
        assert np.abs(decode_bytes(data).astype(int) - smooth.astype(int)).mean() < 3
    assert encode_image(arr, "jpeg", 95).startswith(b"\xff\xd8")


def test_encode_embeds_icc_profile():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for fmt in ("jpeg", "png", "webp"):
        data = encode_image(noise(8, 8), fmt, 90, icc_profile=srgb)
        assert Image.open(io.BytesIO(data)).info.get("icc_profile") == srgb


def test_output_size_limits():
    check_encodable((16_383, 10), "webp")
    with pytest.raises(PairError) as excinfo:
        check_encodable((16_384, 10), "webp")
    assert excinfo.value.reason == IMAGE_TOO_LARGE
    with pytest.raises(PairError):
        check_encodable((10, 70_000), "jpeg")
    check_encodable((70_000, 10), "png")
    with pytest.raises(ValueError):
        encode_image(noise(4, 4), "gif", 90)
