"""Quality checks of a pair's paste-back, and the retries that act on them.

The row's measures come from the paste-back at the output's resolution (`postprocess.composite_pair`). A retry is
decided earlier, in the inference actor, where the model is: there the same paste-back (`imaging.composite.
paste_back`, with the run's colour matching) runs on the scene crop at model resolution, which is cheap and ranks
attempts the same way. A flagged pair is sampled again with seeds derived from its own; the best attempt is kept.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from pipeline.imaging.composite import paste_back
from pipeline.imaging.masks import Region
from pipeline.imaging.seams import SeamMetrics
from pipeline.imaging.settings import ImageSettings
from pipeline.inference.config import QualityConfig
from pipeline.inference.pairing import stable_hash

SEAM, NOTHING_INSERTED, OUTSIDE_CHANGED = "seam", "nothing_inserted", "outside_changed"
# Flags another sample can clear; outside_changed is a bug in paste-back, not in the sample.
RETRIED_FLAGS = (SEAM, NOTHING_INSERTED)


def quality_flags(metrics: SeamMetrics, quality: QualityConfig) -> list[str]:
    """The checks `metrics` fail (a NaN measure, e.g. no seam band, fails none)."""
    flags = []
    if metrics.seam_delta_e > quality.seam_delta_e_max:
        flags.append(SEAM)
    if metrics.region_delta_e < quality.region_delta_e_min:
        flags.append(NOTHING_INSERTED)
    if metrics.outside_changed_px:
        flags.append(OUTSIDE_CHANGED)
    return flags


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of a pair's `attempt` (1: its own seed; later ones derived from it, the same on every run)."""
    return int(seed) if attempt == 1 else stable_hash("retry", str(int(seed)), str(attempt)) & 0x7FFFFFFF


def crop_metrics(scene_crop: np.ndarray, mask_crop: np.ndarray, generated: np.ndarray, window_side: int,
                 settings: ImageSettings) -> SeamMetrics:
    """The paste-back of `generated` into its scene crop, measured at model resolution (dilation and feather scaled
    from scene pixels to crop pixels)."""
    if not mask_crop.any():
        return SeamMetrics.nothing_pasted()
    scale = scene_crop.shape[0] / max(int(window_side), 1)
    dilate = max(1, round(settings.dilate_px * scale)) if settings.dilate_px else 0
    feather = min(dilate, round(settings.feather_px * scale))
    side = scene_crop.shape[0]
    metrics = paste_back(Image.fromarray(scene_crop), generated, (0, 0, side, side), Region.from_mask(mask_crop),
                         dilate_px=dilate, feather_px=feather, color_match=settings.color_match, measure=True)
    assert metrics is not None
    return metrics


def rank(metrics: SeamMetrics, quality: QualityConfig) -> tuple[int, float]:
    """Lower is better: fewer failed checks, then the smaller seam (an unmeasured seam ranks last among equals)."""
    seam = metrics.seam_delta_e
    return len(quality_flags(metrics, quality)), seam if not math.isnan(seam) else math.inf


def needs_retry(metrics: SeamMetrics, quality: QualityConfig) -> bool:
    return any(flag in RETRIED_FLAGS for flag in quality_flags(metrics, quality))
