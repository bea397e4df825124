"""UNet2DConditionModel's forward, split into its encoder half and its decoder half.

DTC needs the skip features between the two halves (to modulate them with FiLM) and needs to run the encoder half on
a second set of weights (the hint encoder). diffusers' forward does both halves in one call, so this re-implements it
for the configurations we use (SD 1.x-shaped: no class/addition embeddings, no encoder_hid_proj, no attention masks),
calling the same submodules in the same order with the same arguments, so the result is the same to the bit.
`check_unet_config` refuses configurations whose forward would take a branch not reproduced here.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from .errors import CheckpointError

# Config fields whose non-default values switch on forward branches this module does not reproduce.
_MUST_BE_UNSET = (
    "class_embed_type",
    "num_class_embeds",
    "addition_embed_type",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "time_embedding_act_fn",
    "time_cond_proj_dim",
)


class UNetEncoderParts(Protocol):
    """What the encoder half needs: UNet2DConditionModel and HintEncoder both have these attributes."""

    time_proj: nn.Module
    time_embedding: nn.Module
    conv_in: nn.Module
    down_blocks: nn.ModuleList
    mid_block: nn.Module


def check_unet_config(config: Any, where: str) -> None:
    """Raise CheckpointError naming the field if `config` uses a UNet feature our split forward does not implement."""
    for key in _MUST_BE_UNSET:
        if config.get(key) is not None:
            raise CheckpointError(f"{where}: UNet config field {key}={config.get(key)!r} is not supported by DTC")
    if config.get("center_input_sample"):
        raise CheckpointError(f"{where}: UNet config field center_input_sample=True is not supported by DTC")
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise CheckpointError(f"{where}: UNet config field mid_block_type must be UNetMidBlock2DCrossAttn")


def time_embedding(parts: UNetEncoderParts, sample: torch.Tensor, timestep: torch.Tensor | float) -> torch.Tensor:
    """`get_time_embed` + `time_embedding`: sinusoidal projection of the timestep, then the MLP.

    Pass the timestep as a tensor already on the sample's device: a Python number costs a host-to-device copy.
    """
    timesteps = timestep
    if not torch.is_tensor(timesteps):
        dtype = torch.float64 if isinstance(timestep, float) else torch.int64
        if sample.device.type == "mps":
            dtype = torch.float32 if isinstance(timestep, float) else torch.int32
        timesteps = torch.tensor([timesteps], dtype=dtype, device=sample.device)
    elif timesteps.ndim == 0:
        timesteps = timesteps[None].to(sample.device)
    timesteps = timesteps.expand(sample.shape[0])
    t_emb = parts.time_proj(timesteps)
    # Timesteps has no weights and returns fp32; the MLP may run in half precision.
    t_emb = t_emb.to(dtype=sample.dtype)
    return parts.time_embedding(t_emb, None)


def encode(
    parts: UNetEncoderParts, sample: torch.Tensor, timestep: torch.Tensor | float, encoder_hidden_states: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Encoder half: time embedding, conv_in, down blocks, mid block.

    Returns (skip features in order: conv_in output then each down block's outputs; mid block output; time embedding).
    """
    emb = time_embedding(parts, sample, timestep)
    hidden = parts.conv_in(sample)
    skips = [hidden]
    for block in parts.down_blocks:
        if getattr(block, "has_cross_attention", False):
            hidden, res = block(
                hidden_states=hidden,
                temb=emb,
                encoder_hidden_states=encoder_hidden_states,
                attention_mask=None,
                cross_attention_kwargs=None,
                encoder_attention_mask=None,
            )
        else:
            hidden, res = block(hidden_states=hidden, temb=emb)
        skips.extend(res)
    mid = parts.mid_block(
        hidden,
        emb,
        encoder_hidden_states=encoder_hidden_states,
        attention_mask=None,
        cross_attention_kwargs=None,
        encoder_attention_mask=None,
    )
    return skips, mid, emb


def decode(
    unet: nn.Module,
    skips: list[torch.Tensor],
    mid: torch.Tensor,
    emb: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    sample_hw: tuple[int, int],
) -> torch.Tensor:
    """Decoder half: up blocks consuming the skip features, then norm, activation and conv_out."""
    # As in diffusers: when the latent size is not a multiple of the total upsampling factor, pass the size of the
    # matching skip to each upsampler so shapes line up.
    up_factor = 2**unet.num_upsamplers
    forward_upsample_size = any(dim % up_factor != 0 for dim in sample_hw)
    upsample_size = None
    remaining = list(skips)
    hidden = mid
    for i, block in enumerate(unet.up_blocks):
        is_final_block = i == len(unet.up_blocks) - 1
        n = len(block.resnets)
        res = tuple(remaining[-n:])
        remaining = remaining[:-n]
        if not is_final_block and forward_upsample_size:
            upsample_size = remaining[-1].shape[2:]
        if getattr(block, "has_cross_attention", False):
            hidden = block(
                hidden_states=hidden,
                temb=emb,
                res_hidden_states_tuple=res,
                encoder_hidden_states=encoder_hidden_states,
                cross_attention_kwargs=None,
                upsample_size=upsample_size,
                attention_mask=None,
                encoder_attention_mask=None,
            )
        else:
            hidden = block(hidden_states=hidden, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size)
    if unet.conv_norm_out is not None:
        hidden = unet.conv_norm_out(hidden)
        hidden = unet.conv_act(hidden)
    return unet.conv_out(hidden)


def skip_channels(parts: UNetEncoderParts) -> list[int]:
    """Channel count of every skip feature `encode` returns, read from the modules (12 for SD 1.5)."""
    channels = [parts.conv_in.out_channels]
    for block in parts.down_blocks:
        channels.extend(resnet.out_channels for resnet in block.resnets)
        if block.downsamplers is not None:
            channels.extend(down.out_channels for down in block.downsamplers)
    return channels


def mid_channels(parts: UNetEncoderParts) -> int:
    return parts.mid_block.resnets[-1].out_channels
