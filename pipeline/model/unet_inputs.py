"""The 9-channel UNet's input: its two public layouts, and the one way its parts are prepared and put together.

Public 9-channel inpainting UNets were trained on one of two channel orders (the README's `input_layout` table), and
a UNet fed the other order computes nonsense:

- `paint_by_example` (diffusers' `PaintByExamplePipeline`): `[noisy latent, masked-scene latent, keep-mask]`, the
  keep-mask being 1 outside the region to fill and 0 inside it;
- `sd_inpaint` (diffusers' `StableDiffusionInpaintPipeline`): `[noisy latent, fill-mask, masked-scene latent]`, the
  fill-mask being 1 inside the region to fill.

The layout is a property of the checkpoint (`dtc.json`'s `input_layout`). Everything else is shared: callers hold
the region as a fill-mask (1 = region to fill) and `build_unet_input` turns it into the layout's channels. For a
binary pixel mask both pipelines prepare the same tensors (the masked scene is the scene with the region's pixels
set to 0; the mask reaches the latent grid by nearest-neighbour resizing, so inverting it before or after resizing
gives the same values), which is why one preparation, `encode_masked_scene`, is exact for both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

PAINT_BY_EXAMPLE = "paint_by_example"
SD_INPAINT = "sd_inpaint"
INPUT_LAYOUTS = (PAINT_BY_EXAMPLE, SD_INPAINT)
# Checkpoints written before the layout was recorded were all built for Paint-by-Example's order.
UNRECORDED_LAYOUT = PAINT_BY_EXAMPLE


def check_input_layout(layout: object, where: str) -> str:
    """`layout` if it names a known layout, else ValueError naming `where`."""
    if layout not in INPUT_LAYOUTS:
        raise ValueError(f"{where}: input_layout {layout!r} is not one of {list(INPUT_LAYOUTS)}")
    return str(layout)


def build_unet_input(
    layout: str, noisy: torch.Tensor, masked_latent: torch.Tensor, fill_mask: torch.Tensor
) -> torch.Tensor:
    """The UNet's (B, 2C+1, h, w) input in `layout`'s channel order.

    noisy: (B, C, h, w) noisy latent (already scaled by the scheduler); masked_latent: (B, C, h, w) scaled latent of
    the masked scene; fill_mask: (B, 1, h, w) at latent size, 1 = region to fill, 0 = keep.
    """
    fill_mask = fill_mask.to(noisy.dtype)
    if layout == PAINT_BY_EXAMPLE:
        return torch.cat([noisy, masked_latent, 1 - fill_mask], dim=1)
    if layout == SD_INPAINT:
        return torch.cat([noisy, fill_mask, masked_latent], dim=1)
    raise ValueError(f"input_layout {layout!r} is not one of {list(INPUT_LAYOUTS)}")


def masked_latent_channels(layout: str, latent_channels: int) -> slice:
    """Where the masked-scene latent sits in `layout`'s input (the channels the hint adapter's output is added to)."""
    check_input_layout(layout, "build the UNet input")
    start = latent_channels if layout == PAINT_BY_EXAMPLE else latent_channels + 1
    return slice(start, start + latent_channels)


def add_to_masked_latent(layout: str, sample: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """`sample` (a UNet input in `layout`) with `delta` (B, C, h, w) added to its masked-scene latent channels."""
    where = masked_latent_channels(layout, delta.shape[1])
    return torch.cat([sample[:, : where.start], sample[:, where] + delta, sample[:, where.stop :]], dim=1)


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1].

    `x / 127.5 - 1` is Paint-by-Example's arithmetic; SD-inpainting's `2 * (x / 255) - 1` gives the same floats
    (doubling is exact in binary floating point), so one conversion serves both layouts.
    """
    return images.permute(0, 3, 1, 2).to(dtype=torch.float32) / 127.5 - 1.0


def encode_masked_scene(
    vae: AutoencoderKL, scene: torch.Tensor, fill_mask: torch.Tensor, posterior_noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-space scene and region -> (masked-scene latent, fill-mask at latent size), as both pipelines make them.

    scene: (B, 3, H, W) in [-1, 1]; fill_mask: (B, 1, H, W) bool (True = region to fill) or float (>= 0.5 = region,
    SD-inpainting's binarisation); posterior_noise: (B, C, H/f, W/f), the standard normal sample that draws each
    latent from the VAE posterior (mean + std * noise). Returns the scaled masked-scene latent and the fill-mask as
    0/1, both in the VAE's dtype, on its device. The inference sampler and the trainer both call this.

    One image per VAE call, as the diffusers pipelines encode with per-sample generators: batched convolutions round
    differently in the last bit, a guided sampler amplifies that, and this is what makes a sample's latent
    independent of its batch and our images reproduce diffusers'. At 512 px the encoder runs once per image against
    2 x 40 UNet passes, and its single-image convolutions already fill a GPU.
    """
    device, dtype = vae.device, vae.dtype
    fill = fill_mask.to(device) if fill_mask.dtype == torch.bool else fill_mask.to(device) >= 0.5
    # Masked in fp32 as the pipelines do, then cast: the region's pixels become 0, the rest stay exactly as given.
    masked_scene = (scene.to(device, torch.float32) * ~fill).to(dtype)
    noise = posterior_noise.to(device, dtype)
    latents = []
    for i in range(masked_scene.shape[0]):
        posterior = vae.encode(masked_scene[i : i + 1]).latent_dist
        latents.append(posterior.mean + posterior.std * noise[i : i + 1])
    masked_latent = vae.config.scaling_factor * torch.cat(latents)
    # Nearest neighbour (interpolate's default), as both pipelines resize their masks to the latent grid.
    fill_latent = F.interpolate(fill.to(torch.float32), size=tuple(masked_latent.shape[-2:])).to(dtype)
    return masked_latent, fill_latent
