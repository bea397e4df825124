"""Half precision on a CUDA device (skipped without one)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.model import DTCSampler, SamplingParams, load_dtc, select_device

from ._helpers import make_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

PARAMS = SamplingParams(steps=10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_cpu_fp32(tiny_dtc, dtype):
    dtc = load_dtc("tiny", device=select_device(), dtype=dtype)
    assert dtc.device.type == "cuda" and dtc.dtype == dtype
    batch = make_batch(2, 128)
    gpu = DTCSampler(dtc, PARAMS, channels_last=True).generate_float(batch)
    cpu = DTCSampler(tiny_dtc, PARAMS).generate_float(batch)
    assert np.isfinite(gpu).all()
    # Same weights (tiny is initialised on the CPU) and the same per-sample noise: only rounding differs.
    assert np.abs(gpu - cpu).mean() < 0.02


def test_default_precision_and_per_sample_noise_on_gpu():
    dtc = load_dtc("tiny")
    assert dtc.device.type == "cuda" and dtc.dtype == torch.float16
    sampler = DTCSampler(dtc, PARAMS)
    batch = make_batch(3, 128)
    alone = dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[1:2] for f in dataclasses.fields(batch)})
    in_batch, by_itself = sampler.generate(batch)[1].astype(int), sampler.generate(alone)[0].astype(int)
    assert np.abs(in_batch - by_itself).mean() < 1.0
