"""A DTC converted from SD-inpainting + DINOv2 reproduces diffusers' StableDiffusionInpaintPipeline.

The pipeline is called with the DTC's projected reference tokens as `prompt_embeds` and its unconditional tokens as
`negative_prompt_embeds`: with a zero hint branch the DTC is that pipeline with an image encoder in front.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from pipeline.model import DTC, DTCSampler, SampleBatch, SamplingParams, load_dtc
from pipeline.model.__main__ import main
from pipeline.model.unet_inputs import PAINT_BY_EXAMPLE, SD_INPAINT, build_unet_input, unit_range

from ._helpers import build_tiny_dinov2, build_tiny_sd_inpaint_pipeline, make_batch

CPU = torch.device("cpu")
SCHEDULER_CLASSES = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
REFERENCE_SIZE = 56  # the tiny DINOv2's image size: 4 x 4 patches + CLS = 17 tokens


@pytest.fixture(scope="module")
def sd_pipeline():
    return build_tiny_sd_inpaint_pipeline()


@pytest.fixture(scope="module")
def converted(sd_pipeline, tmp_path_factory) -> Path:
    """Written by `python -m pipeline.model convert --from-sd-inpaint`, as a user would."""
    root = tmp_path_factory.mktemp("sd-inpaint")
    sd_pipeline.save_pretrained(str(root / "sd"), safe_serialization=True)
    build_tiny_dinov2().save_pretrained(str(root / "dinov2"), safe_serialization=True)
    args = ["convert", "--from-sd-inpaint", str(root / "sd"), "--dinov2", str(root / "dinov2")]
    assert main([*args, "--out", str(root / "dtc")]) == 0
    return root / "dtc"


@pytest.fixture(scope="module")
def dtc(converted) -> DTC:
    dtc = load_dtc(str(converted), device=CPU)
    # A non-zero null token, as after training with reference dropout: a zero one would make every cross-attention
    # layer return its bias alone in the unconditional half, a weaker check of the guidance batch.
    with torch.no_grad():
        dtc.image_encoder.uncond_vector.copy_(torch.randn(dtc.image_encoder.uncond_vector.shape))
    return dtc


def _tokens(dtc: DTC, batch: SampleBatch) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = dtc.image_processor(images=list(batch.reference), return_tensors="pt", input_data_format="channels_last")
    with torch.inference_mode():
        cond = dtc.image_encoder(pixels.pixel_values)
        return cond, dtc.image_encoder.unconditional(cond).contiguous()


def _diffusers_images(pipe, dtc: DTC, batch: SampleBatch, steps: int, guidance: float) -> np.ndarray:
    cond, uncond = _tokens(dtc, batch)
    size = batch.scene.shape[1]
    return pipe(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        image=[PIL.Image.fromarray(s) for s in batch.scene],
        mask_image=[PIL.Image.fromarray(m.astype(np.uint8) * 255) for m in batch.mask],
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=[torch.Generator().manual_seed(int(s)) for s in batch.seeds],
        output_type="np",
    ).images


def test_checkpoint_records_layout_and_provenance(converted, dtc):
    index = json.loads((converted / "dtc.json").read_text())
    assert index["input_layout"] == SD_INPAINT == dtc.input_layout
    provenance = index["provenance"]
    assert provenance["base"]["kind"] == "sd_inpaint_dinov2"
    assert provenance["base"]["sd_inpaint"].endswith("sd") and provenance["base"]["dinov2"].endswith("dinov2")
    assert provenance["trained_parts"] == [] and provenance["training"] is None
    # SD-inpainting's PNDM config has no clip_sample; DDIM built from the DTC's schedule must not clip.
    assert dtc.scheduler_config["clip_sample"] is False
    assert DTCSampler(dtc, SamplingParams("ddim"))._scheduler.config.clip_sample is False


# DDIM with and without guidance, and Euler (which scales the model input): the schedulers' own equivalence is
# test_paint_by_example's; this one is about the input layout.
@pytest.mark.parametrize(("scheduler", "guidance"), [("ddim", 5.0), ("euler", 3.0), ("ddim", 1.0)])
def test_matches_diffusers_pipeline(sd_pipeline, dtc, scheduler, guidance):
    steps = 8
    batch = make_batch(2, 64, seeds=[11, 12], reference_size=REFERENCE_SIZE)
    sd_pipeline.scheduler = SCHEDULER_CLASSES[scheduler].from_config(dtc.scheduler_config)
    expected = _diffusers_images(sd_pipeline, dtc, batch, steps, guidance)
    got = DTCSampler(dtc, SamplingParams(scheduler=scheduler, steps=steps, guidance=guidance)).generate_float(batch)
    assert got.shape == expected.shape == (2, 64, 64, 3)
    assert np.abs(got - expected).max() <= 1e-4
    assert expected.std() > 0.01


def test_first_unet_call_equals_the_pipelines_and_the_other_layout_does_not(sd_pipeline, dtc):
    """The first UNet call, captured inside diffusers' pipeline, against ours on the same seeds and pixels."""
    batch = make_batch(2, 64, seeds=[11, 12], reference_size=REFERENCE_SIZE)
    # A region that touches the image border, where any resize other than nearest-neighbour would differ.
    batch.mask[1, :, :12] = True
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    hook = sd_pipeline.unet.register_forward_hook(lambda _, args, out: calls.append((args[0], args[1], out[0])))
    try:
        sd_pipeline.scheduler = DDIMScheduler.from_config(dtc.scheduler_config)
        _diffusers_images(sd_pipeline, dtc, batch, steps=1, guidance=5.0)
    finally:
        hook.remove()
    ((their_input, timestep, their_output),) = calls

    noise, posterior_noise = DTCSampler(dtc)._noise(batch.seeds, (4, 32, 32))
    cond, uncond = _tokens(dtc, batch)
    tokens = torch.cat([uncond, cond])
    scene, fill_mask = unit_range(torch.from_numpy(batch.scene)), torch.from_numpy(batch.mask)[:, None]
    with torch.inference_mode():
        masked, fill = (torch.cat([x, x]) for x in dtc.encode_masked_scene(scene, fill_mask, posterior_noise))
        noisy = torch.cat([noise, noise])  # DDIM's first step leaves the pure noise unscaled
        hint = torch.zeros_like(masked)
        ours = dtc.unet_input(noisy, masked, fill)
        out = dtc(ours, timestep, tokens, hint)
        # Paint-by-Example's order, which every UNet got before the layout was recorded.
        miswired = build_unet_input(PAINT_BY_EXAMPLE, noisy, masked, fill)
        miswired_out = dtc(miswired, timestep, tokens, hint)
    assert (ours - their_input).abs().max().item() <= 1e-6
    assert (out - their_output).abs().max().item() <= 1e-5
    assert (miswired_out - their_output).abs().max().item() > 0.1 * their_output.abs().max().item()
