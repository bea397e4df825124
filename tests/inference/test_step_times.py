"""The CPU stages time their own steps: every step of a pair is measured, and together they stay within the stage."""

from __future__ import annotations

import time

import pytest

from pipeline.imaging.settings import ImageSettings
from pipeline.inference import postprocess, preprocess
from pipeline.inference.step_times import STEPS, StepTimes
from pipeline.synthetic.images import ellipse_mask, encode, photo


def test_each_step_of_a_pair_is_measured_by_the_stages():
    preprocess.PREPARE_SCENES.clear()
    postprocess.COMPOSITE_SCENES.clear()
    scene = encode(photo(1600, 1200, seed=1), "JPEG", quality=95)
    mask = encode(ellipse_mask((500, 400, 1100, 900), (1600, 1200)), "PNG")
    product = encode(photo(600, 800, seed=2), "JPEG", quality=90)
    settings = ImageSettings(resolution=256, output_format="png")
    times = StepTimes()
    start = time.process_time()
    prepared = preprocess.prepare_pair(scene, product, mask_bytes=mask, box=None, settings=settings, times=times)
    postprocess.composite_pair(scene, prepared.scene_crop, prepared.window, region=prepared.region,
                               settings=settings, times=times)
    total = time.process_time() - start
    assert set(times.seconds) == set(STEPS)
    assert all(times.seconds[step] > 0 for step in STEPS), times.seconds
    assert sum(times.seconds.values()) <= total + 1e-3
    with pytest.raises(KeyError, match="unknown step"), times.step("resize"):
        pass
