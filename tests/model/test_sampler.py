"""The sampler: per-sample seeding, determinism, the hint's effect, input validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.model import DTCSampler, SampleBatch, SamplingParams

from ._helpers import make_batch
from .test_dtc_forward import _randomise_hint_branch

FAST = SamplingParams(scheduler="ddim", steps=10, guidance=5.0)
RES = 128


def _take(batch: SampleBatch, index: slice) -> SampleBatch:
    return SampleBatch(**{f.name: getattr(batch, f.name)[index] for f in dataclasses.fields(batch)})


def test_sample_alone_equals_sample_in_a_batch(tiny_dtc):
    sampler = DTCSampler(tiny_dtc, FAST)
    batch = make_batch(4, RES)
    alone = _take(batch, slice(2, 3))
    # The randomness is per sample, exactly: same noise whatever the batch.
    shape = (4, RES // 8, RES // 8)
    noise_alone, post_alone = sampler._noise(alone.seeds, shape)
    noise_batch, post_batch = sampler._noise(batch.seeds, shape)
    assert (noise_alone[0] == noise_batch[2]).all() and (post_alone[0] == post_batch[2]).all()

    in_batch, by_itself = sampler.generate_float(batch)[2], sampler.generate_float(alone)[0]
    # Batched kernels round differently at the last bit for different batch sizes: float noise, nothing more.
    assert np.abs(in_batch - by_itself).max() <= 1e-4
    u_batch, u_alone = sampler.generate(batch)[2].astype(int), sampler.generate(alone)[0].astype(int)
    assert np.abs(u_batch - u_alone).max() <= 1
    assert (u_batch != u_alone).mean() < 0.01


def test_same_inputs_same_images_and_seed_matters(tiny_dtc):
    sampler = DTCSampler(tiny_dtc, FAST)
    batch = make_batch(2, RES)
    first, second = sampler.generate(batch), sampler.generate(batch)
    assert first.dtype == np.uint8 and first.shape == (2, RES, RES, 3)
    assert (first == second).all()
    reseeded = dataclasses.replace(batch, seeds=batch.seeds + 1)
    assert np.abs(sampler.generate(reseeded).astype(int) - first).max() > 10


def test_other_samples_do_not_change_a_sample(tiny_dtc):
    sampler = DTCSampler(tiny_dtc, FAST)
    batch = make_batch(2, RES)
    changed = dataclasses.replace(batch, scene=batch.scene.copy(), seeds=np.array([batch.seeds[0], 999]))
    changed.scene[1] = 255 - changed.scene[1]
    assert np.abs(sampler.generate_float(batch)[0] - sampler.generate_float(changed)[0]).max() <= 1e-5


def test_hint_branch_changes_generated_images(tiny_dtc):
    batch = make_batch(1, RES)
    zero = DTCSampler(tiny_dtc, FAST).generate_float(batch)
    trained = DTCSampler(_randomise_hint_branch(tiny_dtc), FAST)
    with_hint = trained.generate_float(batch)
    other_hint = trained.generate_float(dataclasses.replace(batch, hint=255 - batch.hint))
    assert np.abs(with_hint - zero).max() > 1e-2
    assert np.abs(with_hint - other_hint).max() > 1e-2


@pytest.mark.parametrize("scheduler", ["dpmpp", "euler"])
def test_other_schedulers_run(tiny_dtc, scheduler):
    images = DTCSampler(tiny_dtc, SamplingParams(scheduler=scheduler, steps=4)).generate(make_batch(1, 64))
    assert images.shape == (1, 64, 64, 3) and images.dtype == np.uint8 and images.std() > 0


def test_default_params_are_the_papers():
    assert SamplingParams() == SamplingParams(scheduler="ddim", steps=40, guidance=5.0)


@pytest.mark.parametrize(
    "kwargs", [{"scheduler": "pndm"}, {"steps": 0}, {"steps": 2.5}, {"guidance": -1.0}, {"guidance": float("nan")}]
)
def test_bad_params_rejected(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scene", np.zeros((1, 60, 60, 3), np.uint8), "multiple of 8"),
        ("scene", np.zeros((1, 64, 64, 3), np.float32), "scene must be uint8"),
        ("mask", np.zeros((1, 64, 64), np.uint8), "mask must be bool"),
        ("hint", np.zeros((1, 32, 32, 3), np.uint8), "hint must be uint8"),
        ("reference", np.zeros((2, 224, 224, 3), np.uint8), "reference must be uint8"),
        ("seeds", np.array([1.5]), "seeds must be integers"),
    ],
)
def test_bad_batches_rejected(tiny_dtc, field, value, message):
    batch = dataclasses.replace(make_batch(1, 64), **{field: value})
    with pytest.raises(ValueError, match=message):
        DTCSampler(tiny_dtc, FAST).generate(batch)
