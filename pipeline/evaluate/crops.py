"""The images the metrics see, cut as Paint-by-Example's evaluation cuts them (eval_tool/clip_score).

The generated region is the output image cropped to the bounding box of the mask and resized to the encoder's square
input, aspect not kept; the reference is the whole product image resized to the same square. Pure functions: images
in, uint8 arrays out.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.imaging.geometry import Box

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

