"""Diffuse-to-Choose: the model, its sampler and its checkpoints.

Usage: `dtc = load_dtc("tiny")` ("sd15", a checkpoint directory, file://..., s3://... likewise), then
`DTCSampler(dtc, SamplingParams()).generate(SampleBatch(scene, mask, hint, reference, seeds))` -> uint8 images.
"""

from __future__ import annotations

from .checkpoint import save_checkpoint
from .device import select_device
from .dtc import DTC
from .errors import CheckpointError
from .loading import load_dtc
from .sampler import DTCSampler, SampleBatch, SamplingParams

__all__ = [
    "DTC",
    "CheckpointError",
    "DTCSampler",
    "SampleBatch",
    "SamplingParams",
    "load_dtc",
    "save_checkpoint",
    "select_device",
]
