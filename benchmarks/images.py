"""The CPU-stage benchmark's pair: photo-like inputs whose JPEGs have a phone photo's size (`pipeline.synthetic`)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.synthetic.images import PHONE, ellipse_mask, encode, photo


@dataclass(frozen=True)
class PairInputs:
    """One pair's input bytes as the CPU stages receive them (after the fetch), and what they are."""

    scene: bytes
    product: bytes
    mask: bytes  # an 8-bit grey PNG of the scene's size (0 / 255), the mask_uri form of the region
    box: tuple[int, int, int, int]  # the mask's bounding box, the box form of the same region
    scene_size: tuple[int, int]
    product_size: tuple[int, int]


def pair_inputs(
    scene_size: tuple[int, int] = (4000, 3000), product_size: tuple[int, int] = (1000, 1000), seed: int = 0
) -> PairInputs:
    """A photo-like JPEG scene (quality 92), a photo-like JPEG product (quality 92) and a region on the scene: an
    ellipse about 22% x 40% of the scene's size in its lower middle, as a PNG mask and as its bounding box."""
    width, height = scene_size
    scene = photo(width, height, seed, scales=PHONE, grain=4.0)
    product = photo(*product_size, seed=seed + 1, scales=PHONE, grain=4.0)
    box = (int(width * 0.375), int(height * 0.5), int(width * 0.6), int(height * 0.9))
    mask = ellipse_mask((box[0], box[1], box[2] - 1, box[3] - 1), scene_size)
    return PairInputs(
        scene=encode(scene, "JPEG", quality=92),
        product=encode(product, "JPEG", quality=92),
        mask=encode(mask, "PNG"),
        box=mask.getbbox() or box,
        scene_size=scene_size,
        product_size=product_size,
    )
