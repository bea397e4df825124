"""The Diffuse-to-Choose network: main inpainting UNet + hint branch, the VAE, the reference encoder."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn
from transformers.image_processing_utils import BaseImageProcessor

from pipeline.core.provenance import PART_NAMES, check_provenance

from . import unet as unet_fwd
from .configs import complete_scheduler_config
from .encoders import ReferenceEncoder
from .errors import CheckpointError
from .hint import HintBranch
from .unet_inputs import add_to_masked_latent, build_unet_input, check_input_layout, encode_masked_scene


class DTC(nn.Module):
    """Holds every component on one device and dtype; `forward` predicts the noise for a 9-channel latent input.

    The 9 channels are in the checkpoint's `input_layout` ("paint_by_example" or "sd_inpaint", see `unet_inputs`):
    build them with `unet_input`, never by hand. `provenance` says where the weights came from and which parts were
    trained (`pipeline.core.provenance`); `save_checkpoint` writes both to dtc.json.
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
        input_layout: str,
        provenance: dict[str, Any],
    ) -> None:
        super().__init__()
        unet_fwd.check_unet_config(unet.config, "unet")
        try:
            input_layout = check_input_layout(input_layout, "dtc")
            provenance = check_provenance(provenance, "dtc")
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
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
        self.scheduler_config = complete_scheduler_config(scheduler_config)
        self.model_id = model_id
        self.default_resolution = int(default_resolution)
        self.input_layout = input_layout
        self.provenance = provenance
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

    def unet_input(self, noisy: torch.Tensor, masked_latent: torch.Tensor, fill_mask: torch.Tensor) -> torch.Tensor:
        """The (B, 2C+1, h, w) input `forward` takes, in this checkpoint's layout.

        noisy: (B, C, h, w) noisy latent, scaled by the scheduler; masked_latent: (B, C, h, w) from
        `encode_masked_scene`; fill_mask: (B, 1, h, w) at latent size, 1 = region to fill, 0 = keep.
        """
        return build_unet_input(self.input_layout, noisy, masked_latent, fill_mask)

    def encode_masked_scene(
        self, scene: torch.Tensor, fill_mask: torch.Tensor, posterior_noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked-scene latent, fill-mask at latent size) from the scene (B, 3, H, W) in [-1, 1] and its pixel
        fill-mask (B, 1, H, W), True = region to fill; `posterior_noise` (B, C, H/f, W/f) draws the VAE posterior
        sample. The sampler and the trainer share this (see `unet_inputs.encode_masked_scene`)."""
        return encode_masked_scene(self.vae, scene, fill_mask, posterior_noise)

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

        sample: (B, 9, h, w) from `unet_input`; timestep: scalar or (B,); encoder_hidden_states: (B, N, D) reference
        tokens; hint_latent: (B, 4, h, w) from `encode_hint`. Returns the predicted noise (B, 4, h, w). The hint
        encoder sees the same input with `hint_latent` added to the masked-scene latent, wherever the layout puts it.
        """
        skips, mid, emb = unet_fwd.encode(self.unet, sample, timestep, encoder_hidden_states)
        hint_sample = add_to_masked_latent(self.input_layout, sample, hint_latent)
        hint_skips, hint_mid, _ = unet_fwd.encode(self.hint.encoder, hint_sample, timestep, encoder_hidden_states)
        skips, mid = self.hint.modulate(skips, mid, hint_skips, hint_mid)
        return unet_fwd.decode(self.unet, skips, mid, emb, encoder_hidden_states, tuple(sample.shape[-2:]))

    def part_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter, by the part it belongs to (`provenance.PART_NAMES`): what a trainer freezes or
        trains, and names in the provenance's `trained_parts`. Each parameter is in exactly one part."""
        prefixes = {
            "unet.encoder": (self.unet, ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")),
            "unet.decoder": (self.unet, ("up_blocks.", "conv_norm_out.", "conv_out.")),
            "vae": (self.vae, ("",)),
            "hint.adapter": (self.hint, ("adapter.",)),
            "hint.encoder": (self.hint, ("encoder.",)),
            "hint.film": (self.hint, ("films.", "film_mid.")),
        }
        for part, starts in self.image_encoder.part_prefixes.items():
            prefixes[f"image_encoder.{part}"] = (self.image_encoder, starts)
        parts: dict[str, list[nn.Parameter]] = {name: [] for name in PART_NAMES}
        for part, (module, starts) in prefixes.items():
            parts[part] = [p for name, p in module.named_parameters() if name.startswith(starts)]
        placed = {id(p) for params in parts.values() for p in params}
        missing = [name for name, p in self.named_parameters() if id(p) not in placed]
        if missing or len(placed) != sum(len(params) for params in parts.values()):
            raise CheckpointError(f"parameters outside the known parts (or in two): {missing[:5]}")
        return parts

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
