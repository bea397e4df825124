from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.core.errors import DECODE_ERROR, IMAGE_TOO_LARGE, MASK_SIZE_MISMATCH, PairError
from pipeline.imaging.decode import (
    decode_image,
    decode_mask,
    decode_mask_image,
    load_rgb,
    open_image,
    rgb_icc_profile,
)
from pipeline.synthetic.images import encode, exif_with_orientation, noise, photo, png_header_only

BIG = 10_000_000


def decode(data: bytes, **kw) -> Image.Image:
    return decode_image(data, max_pixels=kw.pop("max_pixels", BIG), **kw)


def reason_of(excinfo) -> str:
    return excinfo.value.reason


def test_rgb_jpeg():
    img = decode(encode(photo(64, 48), "JPEG"))
    assert img.mode == "RGB" and img.size == (64, 48)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # no cyan/black, full magenta and yellow: red
    img = decode(encode(cmyk, "JPEG", quality=100))
    assert img.mode == "RGB"
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 240 and g < 15 and b < 15


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = decode(data)
    assert np.asarray(img)[0, :, 0].tolist() == [0, 128, 255, 4]
    assert np.all(np.asarray(img)[..., 0] == np.asarray(img)[..., 2])


def test_int32_mode_treated_as_sixteen_bit():
    img = decode(encode(Image.fromarray(np.array([[-5, 65535, 70000]], dtype=np.int32)), "TIFF"))
    assert np.asarray(img)[0, :, 0].tolist() == [0, 255, 255]


def test_grayscale_png():
    grey = Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8))
    img = decode(encode(grey, "PNG"))
    assert np.asarray(img)[0].tolist() == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]


def test_palette_with_transparency_goes_on_white():
    pal = Image.new("P", (4, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.putpixel((2, 0), 1)
    pal.putpixel((3, 0), 0)
    img = decode(encode(pal, "PNG", transparency=1))
    assert np.asarray(img)[0].tolist() == [[255, 0, 0], [255, 255, 255], [255, 255, 255], [255, 0, 0]]


def test_alpha_composited_over_white():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 255))
    assert np.asarray(decode(encode(rgba, "PNG")))[0].tolist() == [[255, 255, 255], [0, 0, 0]]
    la = Image.new("LA", (1, 1), (0, 128))
    assert 125 <= np.asarray(decode(encode(la, "PNG")))[0, 0, 0] <= 129


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    img = decode(data)
    assert img.mode == "RGB" and np.asarray(img)[4, 4].tolist() == [255, 0, 0]


def test_exif_orientation_6_swaps_size_and_rotates():
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    img = decode(encode(stored, "JPEG", quality=100, exif=exif_with_orientation(6)))
    assert img.size == (20, 40)
    arr = np.asarray(img).astype(int)
    assert arr[5, 10, 0] > 200 and arr[5, 10, 2] < 50  # rotated 90 degrees clockwise: left half is now on top
    assert arr[35, 10, 2] > 200 and arr[35, 10, 0] < 50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_exif_transpose(orientation):
    stored = Image.fromarray(noise(7, 5, seed=orientation))
    data = encode(stored, "PNG", exif=exif_with_orientation(orientation))
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(np.asarray(decode(data)), np.asarray(expected))


def test_one_by_one():
    img = decode(encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    assert img.size == (1, 1) and np.asarray(img)[0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("side", [8_000, 100_000])
def test_enormous_header_fails_without_allocating(side):
    data = png_header_only(side, side)
    tracemalloc.start()
    try:
        with pytest.raises(PairError) as excinfo:
            decode(data, max_pixels=50_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason_of(excinfo) == IMAGE_TOO_LARGE
    assert peak < 2_000_000  # a decoded 8000 x 8000 RGB image would be 192 MB


def test_header_checked_against_max_pixels():
    data = encode(photo(100, 100), "PNG")
    with pytest.raises(PairError) as excinfo:
        decode(data, max_pixels=9_999)
    assert reason_of(excinfo) == IMAGE_TOO_LARGE and "100x100" in str(excinfo.value)
    assert decode(data, max_pixels=10_000).size == (100, 100)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is not an image",
        encode(photo(64, 64), "JPEG")[:300],
        encode(photo(64, 64), "JPEG")[:-800],
        encode(Image.fromarray(noise(64, 64)), "PNG")[:-500],
        encode(photo(8, 8), "PPM"),  # a real image in a format we do not open
    ],
    ids=["zero-byte", "text", "jpeg-header-only", "truncated-jpeg", "truncated-png", "ppm"],
)
def test_bad_bytes_are_decode_errors(data):
    with pytest.raises(PairError) as excinfo:
        decode(data)
    assert reason_of(excinfo) == DECODE_ERROR
    assert excinfo.value.message


def test_draft_reduces_jpeg_by_at_most_the_factor():
    data = encode(photo(801, 600), "JPEG")
    for reduction, factor in [(1, 1), (2, 2), (3, 2), (4, 4), (7, 4), (8, 8), (100, 8)]:
        img, got = load_rgb(open_image(data, max_pixels=BIG), reduction=reduction)
        assert got == factor
        assert img.size == (-(-801 // factor), -(-600 // factor))


def test_draft_ignored_for_png():
    img, factor = load_rgb(open_image(encode(photo(80, 60), "PNG"), max_pixels=BIG), reduction=8)
    assert factor == 1 and img.size == (80, 60)


def test_decode_image_with_reduction_is_upright():
    data = encode(photo(400, 200), "JPEG", exif=exif_with_orientation(8))
    assert decode(data, max_reduction=4).size == (50, 100)


def test_rgb_icc_profile_kept_only_for_rgb_profiles():
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = open_image(encode(photo(8, 8), "JPEG", icc_profile=srgb), max_pixels=BIG)
    assert rgb_icc_profile(img) == srgb
    grey_profile = bytearray(srgb)
    grey_profile[16:20] = b"GRAY"
    img.info["icc_profile"] = bytes(grey_profile)
    assert rgb_icc_profile(img) is None
    assert rgb_icc_profile(open_image(encode(photo(8, 8), "PNG"), max_pixels=BIG)) is None


# Masks


def mask_bytes(values: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    return encode(Image.fromarray(values), fmt, **options)


def test_mask_threshold_at_128():
    values = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert decode_mask(mask_bytes(values), size=(4, 1), max_pixels=BIG).tolist() == [[False, False, True, True]]


def test_mask_any_mode_is_made_grey():
    one_bit = Image.fromarray(np.array([[True, False]]))
    assert decode_mask(encode(one_bit, "PNG"), size=(2, 1), max_pixels=BIG).tolist() == [[True, False]]
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 255, 255, 0)  # white, fully transparent: alpha is ignored
    rgba[0, 1] = (0, 0, 0, 255)
    assert decode_mask(encode(Image.fromarray(rgba), "PNG"), size=(2, 1), max_pixels=BIG).tolist() == [[True, False]]
    sixteen = np.array([[40000, 20000]], dtype=np.uint16)  # 156 and 78 in 8 bits
    assert decode_mask(mask_bytes(sixteen), size=(2, 1), max_pixels=BIG).tolist() == [[True, False]]
    palette = Image.fromarray(np.array([[255, 0]], dtype=np.uint8)).convert("P")
    assert decode_mask(encode(palette, "PNG"), size=(2, 1), max_pixels=BIG).tolist() == [[True, False]]


def test_mask_exif_orientation_applied():
    values = np.zeros((2, 3), dtype=np.uint8)
    values[0, 0] = 255  # stored top-left
    got = decode_mask(mask_bytes(values, exif=exif_with_orientation(6)), size=(2, 3), max_pixels=BIG)
    assert got.shape == (3, 2) and got[0, 1] and got.sum() == 1  # 90 degrees clockwise: now top-right


def test_mask_size_mismatch():
    data = mask_bytes(np.zeros((20, 30), dtype=np.uint8))
    with pytest.raises(PairError) as excinfo:
        decode_mask(data, size=(31, 20), max_pixels=BIG)
    assert reason_of(excinfo) == MASK_SIZE_MISMATCH
    with pytest.raises(PairError) as excinfo:
        decode_mask(data, size=(20, 30), max_pixels=BIG)
    assert reason_of(excinfo) == MASK_SIZE_MISMATCH and "upright" in str(excinfo.value)


def test_mask_decode_errors():
    with pytest.raises(PairError) as excinfo:
        decode_mask(b"", size=(2, 2), max_pixels=BIG)
    assert reason_of(excinfo) == DECODE_ERROR
    with pytest.raises(PairError) as excinfo:
        decode_mask_image(png_header_only(9000, 9000), size=(9000, 9000), max_pixels=50_000_000)
    assert reason_of(excinfo) == IMAGE_TOO_LARGE
