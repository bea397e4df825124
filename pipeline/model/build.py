"""Assembling a DTC from base components, and random DTCs of the named configurations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn
from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import PILImageResampling

from pipeline.core.provenance import random_provenance

from .configs import IMAGENET_MEAN, IMAGENET_STD, SD15, DTCConfig
from .dtc import DTC
from .encoders import Dinov2ReferenceEncoder, ReferenceEncoder
from .hint import HintBranch

M = TypeVar("M", bound=nn.Module)

# Seed of every randomly initialised weight we create (random configs, new adapters and projections): a given source
# always gives the same model.
DEFAULT_SEED = 0


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the RNG used to initialise modules created on `device`, without disturbing the caller's RNG state."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def dinov2_image_processor(size: int) -> BaseImageProcessor:
    """DINOv2's normalisation, resizing straight to size x size.

    DINOv2's own processor resizes to 256 and center-crops 224; the pipeline already sends the product framed at 224
    px, and a center crop would cut its edges off, so we resize (a no-op at 224) and never crop. The PIL backend is
    used because it needs no torchvision and gives the same pixels everywhere.
    """
    return BitImageProcessorPil(
        do_resize=True,
        size={"height": size, "width": size},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )


def assemble(
    *,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    image_encoder: ReferenceEncoder,
    image_processor: BaseImageProcessor,
    scheduler_config: dict[str, Any],
    model_id: str,
    default_resolution: int,
    input_layout: str,
    provenance: dict[str, Any],
    adapter_widths: tuple[int, int, int] = SD15.adapter_widths,
    seed: int = DEFAULT_SEED,
) -> DTC:
    """A new DTC around a base network: the hint encoder copies `unet`'s encoder weights, FiLM is zero (so the DTC
    computes exactly what `unet` computes), the adapter is freshly initialised from `seed`."""
    downscale = 2 ** (len(vae.config.block_out_channels) - 1)
    with seeded(seed, unet.device):
        hint = HintBranch(unet, adapter_widths, downscale)
    hint = cast(hint, device=unet.device, dtype=unet.dtype)
    return DTC(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        hint=hint,
        image_processor=image_processor,
        scheduler_config=scheduler_config,
        model_id=model_id,
        default_resolution=default_resolution,
        input_layout=input_layout,
        provenance=provenance,
    )


def build_random(config: DTCConfig, device: torch.device, dtype: torch.dtype, seed: int = DEFAULT_SEED) -> DTC:
    """A DTC of a named size with seeded random weights (zero FiLM and uncond vector, as a new DTC has)."""
    init_device = device if (config.init_on_target_device or device.type == "meta") else torch.device("cpu")
    # Each component is created and cast before the next one so peak memory stays near the final model's size.
    with torch.device(init_device), seeded(seed, init_device):
        unet = cast(UNet2DConditionModel(**config.unet), dtype=dtype)
        vae = cast(AutoencoderKL(**config.vae), dtype=dtype)
        backbone = Dinov2Model(Dinov2Config(**config.dinov2))
        image_encoder = cast(Dinov2ReferenceEncoder(backbone, int(config.unet["cross_attention_dim"])), dtype=dtype)
    dtc = assemble(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        image_processor=dinov2_image_processor(config.reference_size),
        scheduler_config=config.scheduler,
        model_id=config.name,
        default_resolution=config.default_resolution,
        input_layout=config.input_layout,
        provenance=random_provenance(config.name, seed),
        adapter_widths=config.adapter_widths,
        seed=seed + 1,
    )
    return cast(dtc, device=device, dtype=dtype)


def cast(module: M, *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> M:
    """`nn.Module.to` without diffusers' override, which logs a spurious fp32-modules warning on every dtype cast."""
    return nn.Module.to(module, device=device, dtype=dtype)
