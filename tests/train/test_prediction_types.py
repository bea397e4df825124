"""The training target for each prediction type is what diffusers' sampler reads back as the clean latent."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import DDIMScheduler

from pipeline.model.build import build_random
from pipeline.model.configs import TINY
from pipeline.train.step import PREDICTION_TYPES, DenoisingLoss


def _loss(prediction_type: str) -> DenoisingLoss:
    config = dataclasses.replace(TINY, scheduler=dict(TINY.scheduler, prediction_type=prediction_type))
    return DenoisingLoss(build_random(config, torch.device("cpu"), torch.float32), autocast_dtype=None)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_a_perfect_prediction_gives_back_the_clean_latent(prediction_type):
    loss = _loss(prediction_type)
    gen = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    scheduler = DDIMScheduler.from_config(loss.dtc.scheduler_config)
    scheduler.set_timesteps(20)
    for t in (scheduler.timesteps[0], scheduler.timesteps[10], scheduler.timesteps[-1]):
        timesteps = torch.full((3,), int(t))
        noisy = loss.noise_scheduler.add_noise(latents, noise, timesteps)
        target = loss.target(latents, noise, timesteps)
        x0 = scheduler.step(target, t, noisy).pred_original_sample
        torch.testing.assert_close(x0, latents, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(loss.predicted_x0(noisy, target, timesteps), latents, rtol=1e-4, atol=1e-4)


def test_an_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="epsilon, v_prediction, sample"):
        _loss("flow")
