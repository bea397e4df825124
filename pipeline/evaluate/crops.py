"""The images the metrics see, cut as Paint-by-Example's evaluation cuts them (eval_tool/clip_score).

The generated region is the output image cropped to the bounding box of the mask and resized to the encoder's square
input, aspect not kept; the reference is the whole product image resized to the same square. The FID Inception sees
the same cuts, resized to 299 x 299 by one of two published conventions (`FidResize`). Pure functions: images in,
arrays out.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from pipeline.imaging.geometry import Box

# How the FID Inception's 299 x 299 input is made from a cut of any size.
#   pytorch_fid: bilinear without antialiasing (torch's F.interpolate, align_corners=False), as pytorch-fid resizes
#     inside the network; the FIDs of most papers follow it, so it is the default: tryall's figures compare with
#     theirs.
#   clean: clean-fid's "clean" resize, PIL's antialiased bicubic on each channel as floats, clipped to 0..255. The
#     sounder measure (a bilinear shrink without antialiasing aliases, and FID moves with it), comparable with
#     clean-fid's figures for the resize; the network and its [-1, 1] scaling stay pytorch-fid's.
# Both leave a 299 x 299 cut as it is, and neither rounds the resized values to integers.
FidResize = Literal["pytorch_fid", "clean"]
FID_RESIZE_LABELS: dict[str, str] = {
    "pytorch_fid": "pytorch-fid's resize (bilinear, no antialiasing)",
    "clean": "clean-fid's resize (antialiased bicubic)",
}

# Paint-by-Example resizes the cropped result tensor with torchvision's bilinear Resize and the reference with PIL's
# default (bicubic); Pillow's bilinear filter antialiases on downscaling as torchvision's does on tensors now.
REGION_RESAMPLE = Image.Resampling.BILINEAR
REFERENCE_RESAMPLE = Image.Resampling.BICUBIC


def region_crop(image: Image.Image, bbox: Box, size: int) -> np.ndarray:
    """`image` cut to `bbox` (x0, y0, x1, y1; x1, y1 exclusive) and resized to size x size: uint8 (size, size, 3)."""
    return np.asarray(image.convert("RGB").crop(bbox).resize((size, size), REGION_RESAMPLE), np.uint8)


def whole_image(image: Image.Image, size: int) -> np.ndarray:
    """The whole image resized to size x size (aspect not kept, as the reference in Paint-by-Example's tool)."""
    return np.asarray(image.convert("RGB").resize((size, size), REFERENCE_RESAMPLE), np.uint8)



def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output pixel, the two input pixels and the second's weight, as torch's bilinear upsampling takes them
    with align_corners=False: source (i + 0.5) x in/out - 0.5, clamped at 0. Torch computes the source in float32
    with a fused multiply-add (one rounding), and on large inputs that rounding shows: it is reproduced."""
    scale = float(np.float32(size_in) / np.float32(size_out))
    source = np.maximum(((np.arange(size_out) + 0.5) * scale - 0.5).astype(np.float32), np.float32(0.0))
    first = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    weight = np.clip(source - first.astype(np.float32), 0.0, 1.0)
    return first, np.minimum(first + 1, size_in - 1), weight.astype(np.float64)


def resize_pytorch_fid(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (size, size, 3): what F.interpolate(mode="bilinear", align_corners=False) gives.
    Written with numpy because the CPU tasks that cut images do not import torch."""
    x = pixels.astype(np.float64)
    top, bottom, wy = _bilinear_taps(x.shape[0], size)
    left, right, wx = _bilinear_taps(x.shape[1], size)
    rows = x[top] * (1.0 - wy)[:, None, None] + x[bottom] * wy[:, None, None]
    return (rows[:, left] * (1.0 - wx)[None, :, None] + rows[:, right] * wx[None, :, None]).astype(np.float32)


def resize_clean(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (size, size, 3): clean-fid's clean resize, each channel a float ("F") image resized
    with PIL's bicubic filter (antialiased when shrinking), clipped to 0..255."""
    channels = [np.asarray(Image.fromarray(pixels[..., c].astype(np.float32)).resize(
        (size, size), Image.Resampling.BICUBIC)) for c in range(pixels.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 255.0).astype(np.float32)


FID_RESIZERS = {"pytorch_fid": resize_pytorch_fid, "clean": resize_clean}


def fid_input(image: Image.Image, bbox: Box | None, size: int, resize: FidResize) -> np.ndarray:
    """The FID Inception's input: the cut at its own resolution (`bbox`, or the whole image where None), resized to
    size x size by the `resize` convention: float32 (size, size, 3) on the 0..255 scale."""
    rgb = image.convert("RGB")
    return FID_RESIZERS[resize](np.asarray(rgb.crop(bbox) if bbox is not None else rgb, np.uint8), size)
