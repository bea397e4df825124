"""Knobs of the CPU image stages (decode, crop, collage, paste-back, encode)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.imaging.color_match import COLOR_MATCH_METHODS, ColorMatch

OUTPUT_FORMATS = ("jpeg", "png", "webp")
# File extension per output format, for output keys.
OUTPUT_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


@dataclass(frozen=True)
class ImageSettings:
    """Image settings of one run. Pixel sizes are in scene pixels unless they say otherwise.

    Feathering lies inside the dilated region: alpha is exactly 0 outside the mask dilated by `dilate_px`,
    and exactly 1 on the mask itself when `2 * feather_px <= dilate_px` (the defaults: 8 and 4).
    `output_quality == 100` with `webp` means lossless WebP; PNG is always lossless and ignores the quality.
    """

    resolution: int = 512  # model crop size (square, multiple of 8)
    reference_size: int = 224  # side of the square reference image for the image encoder
    max_pixels: int = 50_000_000  # largest accepted width * height, checked on the header before decoding
    context_margin: float = 0.25  # fraction of the mask bbox's longer side added on each side of it
    dilate_px: int = 8  # mask dilation before feathering
    feather_px: int = 4  # width of the alpha ramp, inside the dilated region
    output_format: str = "jpeg"  # jpeg | png | webp
    output_quality: int = 95  # 1..100; jpeg and webp quality; webp at 100 is lossless
    # How paste-back matches the generated crop's colours to the scene's (pipeline/imaging/color_match.py).
    color_match: ColorMatch = "poisson"

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"ImageSettings.{field} = {getattr(self, field)!r}: {rule}")

        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        need(
            is_int(self.resolution) and self.resolution > 0 and self.resolution % 8 == 0,
            "resolution",
            "must be a positive multiple of 8 (the VAE downsamples by 8)",
        )
        need(is_int(self.reference_size) and self.reference_size > 0, "reference_size", "must be a positive int")
        need(is_int(self.max_pixels) and self.max_pixels > 0, "max_pixels", "must be a positive int")
        need(
            isinstance(self.context_margin, (int, float))
            and math.isfinite(self.context_margin)
            and self.context_margin >= 0,
            "context_margin",
            "must be a finite number >= 0",
        )
        need(
            is_int(self.dilate_px) and self.dilate_px >= 0,
            "dilate_px",
            "must be an int >= 0",
        )
        need(
            is_int(self.feather_px) and 0 <= self.feather_px <= self.dilate_px,
            "feather_px",
            "must be an int in [0, dilate_px]: the feather lies inside the dilated region",
        )
        need(self.output_format in OUTPUT_FORMATS, "output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}")
        need(
            is_int(self.output_quality) and 1 <= self.output_quality <= 100,
            "output_quality",
            "must be an int in [1, 100]",
        )
        need(
            self.color_match in COLOR_MATCH_METHODS,
            "color_match",
            f"must be one of {', '.join(COLOR_MATCH_METHODS)} (see pipeline/imaging/color_match.py)",
        )

    @property
    def output_extension(self) -> str:
        return OUTPUT_EXTENSIONS[self.output_format]

    @property
    def lossless(self) -> bool:
        """Whether outputs equal the scene exactly outside the dilated mask (PNG, or WebP at quality 100)."""
        return self.output_format == "png" or (self.output_format == "webp" and self.output_quality == 100)
