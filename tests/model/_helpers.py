"""Test inputs: tiny random models and deterministic batches (nothing from a hub)."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.model import SampleBatch


def build_tiny_pbe_pipeline():
    """A random Paint-by-Example pipeline built like diffusers' own PBE tests build theirs."""
    from diffusers import AutoencoderKL, DDIMScheduler, PaintByExamplePipeline, UNet2DConditionModel
    from diffusers.pipelines.deprecated.paint_by_example.image_encoder import PaintByExampleImageEncoder
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        projection_dim=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        image_size=32,
        patch_size=4,
    )
    image_encoder = PaintByExampleImageEncoder(config, proj_size=32)
    feature_extractor = CLIPImageProcessorPil(crop_size=32, size=32)
    pipe = PaintByExamplePipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=feature_extractor,
    )
    pipe.set_progress_bar_config(disable=True)
    # Inference mode, as from_pretrained leaves models: in train mode dropout(p=0) still changes memory formats and
    # so the last bits of convolutions, which 8 guided steps of a random model amplify past any tolerance.
    for component in (unet, vae, image_encoder):
        component.eval()
    return pipe


def make_batch(size: int, resolution: int, seeds: list[int] | None = None, reference_size: int = 224) -> SampleBatch:
    """Deterministic random inputs; sample i depends only on i (so batches can be sliced and recombined)."""
    scenes, masks, hints, refs = [], [], [], []
    for i in range(size):
        rng = np.random.default_rng(1000 + i)
        scenes.append(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8))
        mask = np.zeros((resolution, resolution), bool)
        lo, hi = resolution // 4 + (i % 3), 3 * resolution // 4
        mask[lo:hi, lo:hi] = True
        masks.append(mask)
        hint = np.zeros((resolution, resolution, 3), np.uint8)
        hint[lo + 2 : hi - 2, lo + 2 : hi - 2] = rng.integers(0, 256, 3, dtype=np.uint8)
        hints.append(hint)
        refs.append(rng.integers(0, 256, (reference_size, reference_size, 3), dtype=np.uint8))
    seeds = seeds if seeds is not None else [100 + i for i in range(size)]
    return SampleBatch(
        scene=np.stack(scenes),
        mask=np.stack(masks),
        hint=np.stack(hints),
        reference=np.stack(refs),
        seeds=np.asarray(seeds, dtype=np.int64),
    )


def build_tiny_sd_inpaint_pipeline():
    """A random SD-inpainting pipeline built like diffusers' own inpainting tests build theirs, without the text
    encoder and tokenizer: the tests hand it reference tokens as `prompt_embeds`, so no text is ever encoded."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    # SD-inpainting ships a PNDMScheduler config, which has no clip_sample key (DDIM built from it must not clip).
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for component in (unet, vae):
        component.eval()
    return pipe


def build_tiny_dinov2(seed: int = 3):
    """A random DINOv2 small enough for every test (patch 14: 224 px gives 257 tokens, 56 px gives 17)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=56)
    return Dinov2Model(config).eval()
