"""The Diffuse-to-Choose network: main inpainting UNet + hint branch, the VAE, the reference encoder."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn
from transformers.image_processing_utils import BaseImageProcessor

from . import unet as unet_fwd
from .encoders import ReferenceEncoder
from .errors import CheckpointError
from .hint import HintBranch


class DTC(nn.Module):
    """Holds every component on one device and dtype; `forward` predicts the noise for a 9-channel latent input.

    Inputs follow Paint-by-Example: channels 0..3 noisy latent, 4..7 latent of the masked scene, 8 the mask with the
    region to fill at 0.
    """

    def __init__(
        self,
        *,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        image_encoder: ReferenceEncoder,
        hint: HintBranch,
        image_processor: BaseImageProcessor,
        scheduler_config: dict[str, Any],
        model_id: str,
        default_resolution: int,
    ) -> None:
        super().__init__()
        unet_fwd.check_unet_config(unet.config, "unet")
        latent = int(vae.config.latent_channels)
        if unet.config.in_channels != 2 * latent + 1 or unet.config.out_channels != latent:
            raise CheckpointError(
                f"unet: in_channels={unet.config.in_channels}, out_channels={unet.config.out_channels} do not fit an "
                f"inpainting UNet for a VAE with {latent} latent channels (expected {2 * latent + 1} and {latent})"
            )
        if image_encoder.uncond_vector_param().shape[-1] != unet.config.cross_attention_dim:
            raise CheckpointError(
                f"image_encoder: token width {image_encoder.uncond_vector_param().shape[-1]} differs from the UNet's "
                f"cross_attention_dim {unet.config.cross_attention_dim}"
            )
        self.unet = unet
        self.vae = vae
        self.image_encoder = image_encoder
        self.hint = hint
        self.image_processor = image_processor
        self.scheduler_config = dict(scheduler_config)
        self.model_id = model_id
        self.default_resolution = int(default_resolution)
        self.use_sdpa()

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def use_sdpa(self) -> None:
        """PyTorch's scaled_dot_product_attention everywhere (diffusers' default; set explicitly so loaders that
        changed processors, or future defaults, cannot silently slow us down)."""
        for module in (self.unet, self.hint.encoder, self.vae):
            for sub in module.modules():
                if hasattr(sub, "set_processor") and hasattr(sub, "processor"):
                    sub.set_processor(AttnProcessor2_0())

    def encode_hint(self, collage: torch.Tensor) -> torch.Tensor:
        """Adapter output for collage pixels in [-1, 1]: constant over the denoising loop, so computed once."""
        return self.hint.adapter(collage)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        hint_latent: torch.Tensor,
    ) -> torch.Tensor:
        """Main encoder, hint encoder, FiLM, main decoder.

        sample: (B, 9, h, w); timestep: scalar or (B,); encoder_hidden_states: (B, N, D) reference tokens;
        hint_latent: (B, 4, h, w) from `encode_hint`. Returns the predicted noise (B, 4, h, w).
        """
        c = self.latent_channels
        skips, mid, emb = unet_fwd.encode(self.unet, sample, timestep, encoder_hidden_states)
        hint_sample = torch.cat([sample[:, :c], sample[:, c : 2 * c] + hint_latent, sample[:, 2 * c :]], dim=1)
        hint_skips, hint_mid, _ = unet_fwd.encode(self.hint.encoder, hint_sample, timestep, encoder_hidden_states)
        skips, mid = self.hint.modulate(skips, mid, hint_skips, hint_mid)
        return unet_fwd.decode(self.unet, skips, mid, emb, encoder_hidden_states, tuple(sample.shape[-2:]))

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (works on the meta device: counts only, no memory)."""
        parts = {
            "unet": self.unet,
            "vae": self.vae,
            "image_encoder": self.image_encoder,
            "hint.adapter": self.hint.adapter,
            "hint.encoder": self.hint.encoder,
            "hint.film": nn.ModuleList([*self.hint.films, self.hint.film_mid]),
        }
        counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts
