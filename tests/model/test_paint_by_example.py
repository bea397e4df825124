"""A DTC built from a Paint-by-Example pipeline reproduces diffusers' PaintByExamplePipeline."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from pipeline.model import DTCSampler, SamplingParams, load_dtc

from ._helpers import make_batch

SCHEDULER_CLASSES = {"ddim": DDIMScheduler, "dpmpp": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}


@pytest.mark.parametrize(("scheduler", "guidance"), [("ddim", 5.0), ("dpmpp", 5.0), ("euler", 3.0), ("ddim", 1.0)])
def test_matches_diffusers_pipeline(pbe_pipeline, pbe_dir, scheduler, guidance):
    steps = 8
    batch = make_batch(2, 64, seeds=[11, 12], reference_size=48)
    pipe = pbe_pipeline
    # The scheduler from the saved config, as a pipeline loaded from pbe_dir would derive it. (An in-memory config
    # marks unset fields as defaults and from_config then drops them, e.g. DDIM's "leading" timestep spacing.)
    saved_config = json.loads((pbe_dir / "scheduler" / "scheduler_config.json").read_text())
    pipe.scheduler = SCHEDULER_CLASSES[scheduler].from_config(saved_config)
    expected = pipe(
        example_image=[PIL.Image.fromarray(r) for r in batch.reference],
        image=[PIL.Image.fromarray(s) for s in batch.scene],
        mask_image=[PIL.Image.fromarray(m.astype(np.uint8) * 255) for m in batch.mask],
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=[torch.Generator().manual_seed(int(s)) for s in batch.seeds],
        output_type="np",
    ).images

    dtc = load_dtc(str(pbe_dir), device=torch.device("cpu"))
    got = DTCSampler(dtc, SamplingParams(scheduler=scheduler, steps=steps, guidance=guidance)).generate_float(batch)

    assert got.shape == expected.shape == (2, 64, 64, 3)
    assert np.abs(got - expected).max() <= 1e-4
    # The images are not trivial (the comparison would pass vacuously on constant outputs).
    assert expected.std() > 0.01
