"""Bytes to upright RGB images and boolean masks, with the size checked on the header before any pixel is decoded.

Every failure is a `PairError`: `decode_error` for empty, truncated, corrupt or unsupported data, and
`image_too_large` when the header's width * height exceeds `max_pixels`.

Decoding is split in steps so that callers can do less work: `open_image` reads only the header,
`read_orientation` the EXIF orientation, and `load_rgb` decodes the pixels, optionally with JPEG draft
(DCT-domain) downscaling by 2, 4 or 8, in the stored orientation. `decode_image` chains them and
returns the upright image.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from pipeline.core.errors import DECODE_ERROR, IMAGE_TOO_LARGE, MASK_SIZE_MISMATCH, PairError

# Formats we open. Others (EPS, which runs Ghostscript, PSD, ICO, ...) are refused: fewer parsers
# exposed to untrusted bytes, and none of them is a sensible catalogue or scene format.
_WANTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
Image.init()
ALLOWED_FORMATS = tuple(name for name in _WANTED_FORMATS if name in Image.OPEN)

# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does).
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_WHITE = (255, 255, 255)


def _decode_error(what: str, exc: BaseException) -> PairError:
    return PairError(
        DECODE_ERROR,
        f"the {what} image cannot be decoded ({type(exc).__name__}: {exc}); "
        f"check that the file is complete and is one of: {', '.join(ALLOWED_FORMATS)}",
    )


def open_image(data: bytes, *, max_pixels: int, what: str = "image") -> Image.Image:
    """Read the header only and check it: the returned image is lazy (no pixel decoded yet).

    Raises `decode_error` for empty or unidentifiable data, `image_too_large` when width * height > max_pixels.
    """
    if data is None or len(data) == 0:
        raise PairError(DECODE_ERROR, f"the {what} image is empty (0 bytes); check its source file")
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow's own bound, 2 * Image.MAX_IMAGE_PIXELS (~179 MP), checked on the header: it caps max_pixels.
        raise PairError(IMAGE_TOO_LARGE, f"the {what} image is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise PairError(
            DECODE_ERROR,
            f"the {what} data ({len(data)} bytes, starting {bytes(data[:8])!r}) is not an image in a supported "
            f"format ({', '.join(ALLOWED_FORMATS)})",
        ) from exc
    except Exception as exc:  # Pillow's plugins raise many types (SyntaxError, struct.error, ...) on bad headers
        raise _decode_error(what, exc) from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise PairError(DECODE_ERROR, f"the {what} image header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise PairError(
            IMAGE_TOO_LARGE,
            f"the {what} image is {width}x{height} = {width * height} pixels, more than max_pixels={max_pixels}; "
            "downscale it or raise max_pixels",
        )
    return img


def read_orientation(img: Image.Image, *, what: str = "image") -> int:
    """The EXIF orientation (1..8; 1 when absent or out of range) of an `open_image` result, before decoding.

    Reads only what the header gave. For PNG that is an eXIf chunk before the image data: one after it would
    need the pixels decoded to be found (Pillow's `getexif` does that) and is ignored, as browsers do.
    """
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # a malformed EXIF block
        raise _decode_error(what, exc) from exc
    return value if value in TRANSPOSE else 1


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(W, H) after applying the EXIF orientation to an image of stored size `size`."""
    return (size[1], size[0]) if orientation in _SWAPS_AXES else (size[0], size[1])


def transpose_upright(img: Image.Image, orientation: int) -> Image.Image:
    method = TRANSPOSE.get(orientation)
    return img if method is None else img.transpose(method)


def load_rgb(img: Image.Image, *, reduction: int = 1, what: str = "image") -> tuple[Image.Image, int]:
    """Decode the pixels of an `open_image` result to RGB, in the stored (not upright) orientation.

    `reduction` is the largest acceptable downscale factor. For JPEG the decoder then scales by the largest of
    8, 4, 2 that is <= `reduction` (draft mode: far less work, quality like a box filter); other formats
    decode at full size. Returns (image, the factor applied): pixel i of the result covers stored pixels
    [i * factor, (i + 1) * factor), the last row and column possibly partial.

    Conversion: transparency is composited over white (catalogue convention); 16-bit grey ("I;16", and "I",
    assumed to hold 16-bit values) is scaled to 8 bits; CMYK is converted by Pillow's formula (no ICC
    colour management); palette, greyscale and 1-bit images are expanded; animated images give frame 0.
    """
    factor = 1
    try:
        if reduction >= 2 and img.format in ("JPEG", "MPO"):
            width, height = img.size
            wanted = max(f for f in (1, 2, 4, 8) if f <= reduction)
            # Pillow picks the largest of 8/4/2/1 not above min(W // w, H // h); asking for W // f gives f.
            drafted = img.draft(img.mode, (max(1, width // wanted), max(1, height // wanted)))
            if drafted is not None:
                factor = round(width / drafted[1][2])
        img.load()
        return _to_rgb(img), factor
    except PairError:
        raise
    except Exception as exc:  # truncated data, corrupt streams, unsupported modes
        raise _decode_error(what, exc) from exc


def _sixteen_bit_to_8(img: Image.Image) -> Image.Image:
    # Pillow's own I;16 -> L conversion clips at 255 instead of scaling, so scale here (round to nearest).
    values = np.asarray(img)
    if img.mode == "I":
        values = np.clip(values, 0, 65535)
    values = values.astype(np.uint32)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_8(img).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, _WHITE)
        canvas.paste(rgba, (0, 0), rgba)
        return canvas
    return img.convert("RGB")


def decode_image(data: bytes, *, max_pixels: int, max_reduction: int = 1, what: str = "image") -> Image.Image:
    """Bytes to an upright RGB image (EXIF orientation applied); see `load_rgb` for modes and reduction.

    With `max_reduction` > 1 a JPEG may come back smaller by a factor 2, 4 or 8 (never more than asked).
    """
    img = open_image(data, max_pixels=max_pixels, what=what)
    orientation = read_orientation(img, what=what)
    rgb, _ = load_rgb(img, reduction=max_reduction, what=what)
    return transpose_upright(rgb, orientation)


def rgb_icc_profile(img: Image.Image) -> bytes | None:
    """The embedded ICC profile if it describes RGB data (so it stays valid for our RGB output), else None.

    Outputs carry the scene's profile so that wide-gamut scenes keep their colours; a CMYK or grey profile
    would be wrong for RGB pixels and is dropped.
    """
    profile = img.info.get("icc_profile")
    if isinstance(profile, bytes) and len(profile) >= 20 and profile[16:20] == b"RGB ":
        return profile
    return None


def decode_mask_image(data: bytes, *, size: tuple[int, int], max_pixels: int) -> Image.Image:
    """Bytes of a mask image to an upright 8-bit grey ("L") image; the region is where grey >= 128.

    Not thresholded here: `masks.Region` thresholds only the crops it needs, not the whole scene-sized mask.

    Any mode is converted to 8-bit grey first (alpha is ignored; 16-bit is scaled); the mask's own EXIF
    orientation is applied. Its upright size must equal `size`, the upright scene's (W, H), else
    `mask_size_mismatch` (checked on the header, before decoding).
    """
    img = open_image(data, max_pixels=max_pixels, what="mask")
    orientation = read_orientation(img, what="mask")
    got = upright_size(img.size, orientation)
    if got != tuple(size):
        hint = ""
        if got == (size[1], size[0]):
            hint = " (it matches the scene turned by 90 degrees: draw masks on the upright scene, EXIF applied)"
        raise PairError(
            MASK_SIZE_MISMATCH,
            f"the mask is {got[0]}x{got[1]} but the scene is {size[0]}x{size[1]}{hint}; "
            "a mask must have the scene's full resolution",
        )
    try:
        img.load()
        if img.mode in _SIXTEEN_BIT_MODES:
            grey = _sixteen_bit_to_8(img)
        elif img.mode == "L":
            grey = img
        else:
            grey = img.convert("L")
    except Exception as exc:  # truncated data, corrupt streams, unsupported modes
        raise _decode_error("mask", exc) from exc
    return transpose_upright(grey, orientation)


def decode_mask(data: bytes, *, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Like `decode_mask_image`, as a bool array (H, W), True in the region (grey >= 128)."""
    return np.asarray(decode_mask_image(data, size=size, max_pixels=max_pixels)) >= 128
