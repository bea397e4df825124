"""The hint branch: adapter (collage pixels -> latent grid), hint encoder (a copy of the UNet's encoder), FiLM.

What the paper fixes: a shallow four-convolution adapter, its output added to the masked-scene latent, a trainable copy
of the main encoder, and FiLM (`s * (1 + gamma) + beta`) at every skip connection and the mid block. The choices the
paper leaves open are made and explained next to the code that makes them.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from . import unet as unet_fwd


class HintAdapter(nn.Module):
    """Four 3x3 convolutions from the collage (3 ch, crop resolution) to the latent grid (latent ch, 1/scale)."""

    def __init__(self, widths: tuple[int, int, int], latent_channels: int, downscale: int) -> None:
        super().__init__()
        n_down = int(math.log2(downscale))
        if 2**n_down != downscale or not 0 <= n_down <= 3:
            raise ValueError(f"adapter downscale must be 1, 2, 4 or 8 (the VAE's), got {downscale}")
        # The first log2(scale) convolutions halve the resolution (three for SD's 1/8 latent), the rest keep it: the
        # same four convolutions serve any VAE down to the tiny test ones that downsample by 2.
        strides = [2] * n_down + [1] * (4 - n_down)
        chans = [3, *widths, latent_channels]
        layers: list[nn.Module] = []
        for i, stride in enumerate(strides):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], kernel_size=3, stride=stride, padding=1))
            if i < 3:
                layers.append(nn.SiLU())
        self.layers = nn.Sequential(*layers)
        self.widths = tuple(widths)
        self.latent_channels = latent_channels
        self.downscale = downscale
        # Last convolution zero-initialised (as ControlNet's condition embedding): a new hint encoder first sees
        # exactly the main encoder's input, so it starts from features its copied weights were trained on.
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, collage: torch.Tensor) -> torch.Tensor:
        """collage: (B, 3, R, R) in [-1, 1] (the VAE's input range) -> (B, latent_channels, R/scale, R/scale)."""
        return self.layers(collage)


class HintEncoder(nn.Module):
    """A trainable copy of the main UNet's conv_in, time embedding, down blocks and mid block.

    What it sees (a choice the paper leaves open): the same 9-channel input as the main UNet (noisy latent,
    masked-scene latent, mask) with the adapter's output added to the masked-scene latent, the same timestep, and the
    same reference tokens through its cross-attention layers. Keeping the main encoder's inputs is what makes
    initialising it from the main encoder's weights meaningful (ControlNet makes the same choice); the timestep lets
    the hint's influence depend on the noise level, and the reference tokens let it align the collage with the
    product it shows.
    """

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.conv_in = copy.deepcopy(unet.conv_in)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)


class FiLM(nn.Module):
    """`s * (1 + gamma) + beta`, gamma and beta from the hint feature at the same position.

    The layer producing gamma and beta (left open by the paper) is one 1x1 convolution to 2C channels, zero-initialised
    so a new DTC is exactly its base network. 1x1 keeps it per-pixel like the additive skip injection it replaces
    (ControlNet's zero convolutions are also 1x1) and costs little next to the UNet.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, 2 * channels, kernel_size=1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, feature: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(hint).chunk(2, dim=1)
        return feature * (1 + gamma) + beta


class HintBranch(nn.Module):
    """Adapter + hint encoder + one FiLM per skip feature (12 for SD 1.5) and one for the mid block."""

    def __init__(self, unet: UNet2DConditionModel, adapter_widths: tuple[int, int, int], downscale: int) -> None:
        super().__init__()
        latent_channels = int(unet.config.out_channels)
        self.adapter = HintAdapter(adapter_widths, latent_channels, downscale)
        self.encoder = HintEncoder(unet)
        self.films = nn.ModuleList(FiLM(c) for c in unet_fwd.skip_channels(self.encoder))
        self.film_mid = FiLM(unet_fwd.mid_channels(self.encoder))
        self.latent_channels = latent_channels

    def config_dict(self, unet_config: dict[str, Any]) -> dict[str, Any]:
        """What `from_config` needs: the UNet config the encoder copies, the adapter shape, FiLM widths (a check)."""
        return {
            "unet": unet_config,
            "adapter": {
                "widths": list(self.adapter.widths),
                "latent_channels": self.adapter.latent_channels,
                "downscale": self.adapter.downscale,
            },
            "film": {
                "skip_channels": [f.proj.in_channels for f in self.films],
                "mid_channels": self.film_mid.proj.in_channels,
            },
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HintBranch:
        """Rebuild the module structure (weights random, or meta under a meta device context)."""
        unet = UNet2DConditionModel.from_config(config["unet"])
        adapter = config["adapter"]
        return cls(unet, tuple(adapter["widths"]), int(adapter["downscale"]))

    def modulate(
        self,
        skips: list[torch.Tensor],
        mid: torch.Tensor,
        hint_skips: list[torch.Tensor],
        hint_mid: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Apply FiLM to each main skip feature and the mid feature with the hint encoder's matching features."""
        out = [film(s, h) for film, s, h in zip(self.films, skips, hint_skips, strict=True)]
        return out, self.film_mid(mid, hint_mid)
