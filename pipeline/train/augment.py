"""Self-supervised pair augmentations, as Paint-by-Example trains (pure functions of a NumPy generator).

The reference is the region's own crop, flipped, rotated, blurred and perspective-warped so the model cannot copy
pixels; the mask is the region's box grown by a random share of the free space around it, or (some of the time) a
jittered outline around the box, so the model does not learn the region's exact shape from the mask.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.imaging.geometry import Box

_WHITE = (255, 255, 255)  # the reference's background at inference (make_reference pads with white)


def grow_box(box: Box, size: tuple[int, int], rng: np.random.Generator, share: float) -> Box:
    """Each side moves out by a uniform random share (up to `share`) of the free space between it and the border."""
    x0, y0, x1, y1 = box
    width, height = size
    grow = rng.uniform(0.0, share, 4)
    return (
        int(round(x0 - grow[0] * x0)),
        int(round(y0 - grow[1] * y0)),
        int(round(x1 + grow[2] * (width - x1))),
        int(round(y1 + grow[3] * (height - y1))),
    )


def outline_mask(inner: Box, outer: Box, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A bool (H, W) mask: a polygon whose vertices lie between `inner` and `outer` (one per angle step), united with
    `inner` so the region to fill always covers the whole object."""
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    count = int(rng.integers(8, 20))
    angles = np.sort(rng.uniform(0.0, 2 * math.pi, count))
    points = []
    for angle in angles:
        dx, dy = math.cos(angle), math.sin(angle)
        near, far = _ray_exit(inner, cx, cy, dx, dy), _ray_exit(outer, cx, cy, dx, dy)
        dist = near + rng.uniform(0.0, 1.0) * max(far - near, 0.0)
        points.append((cx + dx * dist, cy + dy * dist))
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    draw.polygon(points, fill=255)
    draw.rectangle((inner[0], inner[1], inner[2] - 1, inner[3] - 1), fill=255)
    return np.asarray(image) >= 128


def _ray_exit(box: Box, cx: float, cy: float, dx: float, dy: float) -> float:
    """Distance from (cx, cy), inside `box`, along (dx, dy) to the box's edge."""
    limits = []
    if dx > 1e-9:
        limits.append((box[2] - cx) / dx)
    elif dx < -1e-9:
        limits.append((box[0] - cx) / dx)
    if dy > 1e-9:
        limits.append((box[3] - cy) / dy)
    elif dy < -1e-9:
        limits.append((box[1] - cy) / dy)
    return max(0.0, min(limits))


def augment_reference(
    image: Image.Image,
    rng: np.random.Generator,
    *,
    flip_p: float,
    rotate_deg: float,
    blur_p: float,
    perspective_p: float,
) -> Image.Image:
    """Flip, rotation (white fill, canvas expanded so nothing is cut), blur and a perspective warp, each drawn."""
    # Every draw happens whatever the probabilities, so one setting never shifts the random stream of another.
    flip, blur, warp = rng.uniform(0.0, 1.0, 3)
    angle = rng.uniform(-rotate_deg, rotate_deg)
    radius = rng.uniform(0.5, 2.0)
    corners = rng.uniform(-0.12, 0.12, 8)
    if flip < flip_p:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rotate_deg > 0:
        image = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=_WHITE)
    if warp < perspective_p:
        image = _perspective(image, corners)
    if blur < blur_p:
        image = image.filter(ImageFilter.GaussianBlur(radius * max(image.size) / 224))
    return image


def _perspective(image: Image.Image, jitter: np.ndarray) -> Image.Image:
    """Move each corner by up to 12% of the side: the homography that maps the output corners to the jittered ones."""
    w, h = image.size
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    src = [(x + jx * w, y + jy * h) for (x, y), jx, jy in zip(dst, jitter[0::2], jitter[1::2], strict=True)]
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    coeffs = np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float))
    return image.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC,
                           fillcolor=_WHITE)
