"""How an image is sampled, by default: the paper's settings, the one definition the inference settings and the
sampler both read (torch-free, so the driver's settings need no torch)."""

from __future__ import annotations

from typing import Literal, get_args

Scheduler = Literal["ddim", "dpmpp", "euler"]
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
# The paper's inference: DDIM, 40 steps, classifier-free guidance 5.
DEFAULT_SCHEDULER: Scheduler = "ddim"
DEFAULT_STEPS = 40
DEFAULT_GUIDANCE = 5.0
