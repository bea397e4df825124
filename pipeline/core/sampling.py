"""How an image is sampled, by default: the paper's settings, the one definition the inference settings and the
sampler both read (torch-free, so the driver's settings need no torch)."""

from __future__ import annotations

import math
from typing import Literal, get_args

Scheduler = Literal["ddim", "dpmpp", "euler"]
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
# The paper's inference: DDIM, 40 steps, classifier-free guidance 5.
DEFAULT_SCHEDULER: Scheduler = "ddim"
DEFAULT_STEPS = 40
DEFAULT_GUIDANCE = 5.0


def check_steps_and_guidance(steps: object, guidance: float) -> None:
    """ValueError unless `steps` is a positive integer and `guidance` a finite number >= 0 (every sampler's rule)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not math.isfinite(guidance) or guidance < 0:
        raise ValueError(f"guidance must be a finite number >= 0, got {guidance!r}")
