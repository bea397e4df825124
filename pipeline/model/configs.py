"""Named model configurations: `tiny` for tests and laptops, `small` for the demo model, `sd15` for the paper's size.

Both are built with random (seeded) weights when no checkpoint is given: `sd15` so speed can be measured without
weights, `tiny` so every test and the demo run in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.core.model_sources import SD15_MODEL, SMALL_MODEL, TINY_MODEL

from .unet_inputs import PAINT_BY_EXAMPLE

# Stable Diffusion 1.x noise schedule (scaled_linear betas, "leading" spacing, steps_offset 1), as shipped with SD 1.5
# inpainting and Paint-by-Example; the sampler derives DDIM / DPM-Solver++ / Euler from it.
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def complete_scheduler_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with `clip_sample` made explicit, False unless the config says otherwise.

    DDIMScheduler and DDPMScheduler default to clip_sample=True, but SD's schedule never clips; a config saved by a
    scheduler without that option (PNDMScheduler, which SD pipelines often ship) lacks the key, and DDIM built from it
    would clip every predicted x0 to [-1, 1].
    """
    return {"clip_sample": False, **config}


# DINOv2's training normalisation (ImageNet statistics).
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class DTCConfig:
    """Everything needed to build a randomly initialised DTC of a given size."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    dinov2: dict[str, Any]
    adapter_widths: tuple[int, int, int]
    default_resolution: int
    # Random init of 2.6B parameters on a CPU takes minutes; on the GPU it takes seconds. The small config is built on
    # the CPU so its weights (and so its images) are the same on every machine.
    init_on_target_device: bool
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SD_SCHEDULER_CONFIG))
    # A random UNet learns whichever order it is trained on; Paint-by-Example's keeps the named models' images as
    # they always were.
    input_layout: str = PAINT_BY_EXAMPLE

    @property
    def reference_size(self) -> int:
        return int(self.dinov2["image_size"])


TINY = DTCConfig(
    name=TINY_MODEL,
    unet={
        "sample_size": 32,
        "in_channels": 9,
        "out_channels": 4,
        # Cross-attention only at the lower resolution keeps self-attention over 16x16 tokens, not 32x32: this is what
        # lets a 256 px crop run 40 guided steps in seconds on one core.
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "cross_attention_dim": 32,
        # diffusers' legacy name: this is the number of heads. Two heads of 32 channels: CPU attention kernels are
        # slow on tiny heads, and attention would otherwise be half of the tiny model's time.
        "attention_head_dim": 2,
        "norm_num_groups": 8,
    },
    vae={
        "in_channels": 3,
        "out_channels": 3,
        # Four blocks so the latent grid is 1/8 of the crop, as in SD: the sampler and hint adapter see the same shapes
        # as with sd15.
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [8, 16, 32, 32],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 256,
        "scaling_factor": 0.18215,
    },
    dinov2={
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "image_size": 224,
    },
    adapter_widths=(8, 16, 32),
    default_resolution=256,
    init_on_target_device=False,
)

# The demo model's architecture, small enough to train from nothing on 2 CPU cores: 64 px crops, a 1/4 latent grid
# (16 x 16, the VAE's first stage at 16 channels), self-attention only on the 8 x 8 level.
SMALL = DTCConfig(
    name=SMALL_MODEL,
    unet=dict(TINY.unet, sample_size=16, block_out_channels=[48, 96], cross_attention_dim=64),
    vae=dict(
        TINY.vae,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[16, 32, 64],
        sample_size=64,
        mid_block_add_attention=False,
        # One group: the autoencoder stage's linear start (pipeline.train.autoencoder.linear_start) needs it.
        norm_num_groups=1,
    ),
    dinov2=dict(TINY.dinov2, image_size=56),
    adapter_widths=(16, 32, 64),
    default_resolution=64,
    init_on_target_device=False,
    # Velocity prediction (SD 2's): trained from nothing on 2 CPU cores, the demo model filled held-out regions far
    # better predicting the velocity than the noise (README, "The demo model"): the clean image is a direct target at
    # high noise, where an undertrained noise predictor leaves colour noise.
    scheduler=dict(SD_SCHEDULER_CONFIG, prediction_type="v_prediction"),
)

SD15 = DTCConfig(
    name=SD15_MODEL,
    # Stable Diffusion 1.5 inpainting UNet (runwayml/stable-diffusion-inpainting unet/config.json).
    unet={
        "sample_size": 64,
        "in_channels": 9,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "center_input_sample": False,
    },
    # Stable Diffusion's KL VAE (vae/config.json).
    vae={
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    },
    # DINOv2 ViT-g/14 (facebook/dinov2-giant) at the paper's 224 px input: 16x16 patches + CLS = 257 tokens. The hub
    # config says image_size 518; with 224 here the position embeddings are exactly the 257 used, no interpolation.
    dinov2={
        "hidden_size": 1536,
        "num_hidden_layers": 40,
        "num_attention_heads": 24,
        "mlp_ratio": 4,
        "patch_size": 14,
        "image_size": 224,
        "use_swiglu_ffn": True,
        "layerscale_value": 1.0,
        "layer_norm_eps": 1e-6,
    },
    # The paper only says "shallow": three stride-2 3x3 convolutions (512 -> 64 px) of modest width and a 3x3 to the
    # 4 latent channels, about the size of ControlNet's condition embedding (16..256 wide), which solves the same task.
    adapter_widths=(32, 64, 128),
    default_resolution=512,
    init_on_target_device=True,
)

NAMED_CONFIGS: dict[str, DTCConfig] = {c.name: c for c in (TINY, SMALL, SD15)}
