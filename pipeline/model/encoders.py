"""Reference (product) image encoders: the tokens the UNet cross-attends to, and the unconditional tokens for guidance.

Two kinds exist. `dinov2` is the paper's: DINOv2 and one linear projection to the UNet's cross-attention width, all
tokens kept (CLS + patches). `paint_by_example` wraps diffusers' `PaintByExampleImageEncoder` (CLIP + mapper, one
token) so a Paint-by-Example checkpoint is a valid start and our sampler can be held to diffusers' pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from diffusers.pipelines.deprecated.paint_by_example.image_encoder import PaintByExampleImageEncoder
from torch import nn
from transformers import CLIPVisionConfig, Dinov2Config, Dinov2Model

from .errors import CheckpointError


class ReferenceEncoder(nn.Module, ABC):
    """Maps processed reference pixels to cross-attention tokens; `unconditional` gives guidance's null tokens."""

    kind: str = ""
    # Parameter-name prefixes of the trainable parts (`pipeline.core.provenance.PART_NAMES` without "image_encoder.").
    part_prefixes: dict[str, tuple[str, ...]] = {}

    @abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) processed pixels -> (B, N, D) tokens, D the UNet's cross-attention width."""

    @abstractmethod
    def uncond_vector_param(self) -> torch.Tensor:
        """The (1, 1, D) learned null token."""

    def unconditional(self, cond: torch.Tensor) -> torch.Tensor:
        """Null tokens shaped like `cond`.

        One learned vector repeated over the N token positions. Repeating one token N times is exactly one token for
        cross-attention (identical keys get equal weights, so the output is that token's value), so this keeps the
        guidance batch a single stacked tensor however many tokens the conditional branch has.
        """
        vec = self.uncond_vector_param().to(dtype=cond.dtype)
        return vec.expand(cond.shape[0], cond.shape[1], vec.shape[-1])

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable description from which `reference_encoder_from_config` rebuilds this encoder."""


class Dinov2ReferenceEncoder(ReferenceEncoder):
    """DINOv2 (all 257 tokens at 224 px for ViT-*/14) + one linear projection to the UNet's cross-attention width."""

    kind = "dinov2"
    part_prefixes = {"backbone": ("backbone.",), "projection": ("proj.",), "uncond_vector": ("uncond_vector",)}

    def __init__(self, backbone: Dinov2Model, cross_attention_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(backbone.config.hidden_size, cross_attention_dim)
        # Guidance's null condition: a learned vector, zero-initialised. Zero tokens make every cross-attention layer
        # return just its output bias (keys and values are bias-free projections of 0), i.e. a clean "no reference"
        # signal from step one; training with reference dropout can then move it. PBE learns its vector the same way.
        self.uncond_vector = nn.Parameter(torch.zeros(1, 1, cross_attention_dim))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # last_hidden_state is after DINOv2's final LayerNorm: the features DINOv2 is trained to expose.
        hidden = self.backbone(pixel_values=pixel_values).last_hidden_state
        return self.proj(hidden)

    def uncond_vector_param(self) -> torch.Tensor:
        return self.uncond_vector

    def config_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "backbone": self.backbone.config.to_dict(),
            "cross_attention_dim": self.proj.out_features,
        }


class PaintByExampleReferenceEncoder(ReferenceEncoder):
    """diffusers' `PaintByExampleImageEncoder` (CLIP pooled token -> mapper -> projection) and its uncond_vector."""

    kind = "paint_by_example"
    part_prefixes = {
        "backbone": ("encoder.model.",),
        "projection": ("encoder.mapper.", "encoder.final_layer_norm.", "encoder.proj_out."),
        "uncond_vector": ("encoder.uncond_vector",),
    }

    def __init__(self, encoder: PaintByExampleImageEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixel_values)

    def uncond_vector_param(self) -> torch.Tensor:
        return self.encoder.uncond_vector

    def config_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "backbone": self.encoder.config.to_dict(), "proj_size": self.encoder.proj_size}


def reference_encoder_from_config(config: dict[str, Any]) -> ReferenceEncoder:
    """Build (random or meta) an encoder from `config_dict()` output."""
    kind = config.get("type")
    backbone = dict(config.get("backbone") or {})
    if kind == Dinov2ReferenceEncoder.kind:
        return Dinov2ReferenceEncoder(
            Dinov2Model(Dinov2Config.from_dict(backbone)), int(config["cross_attention_dim"])
        )
    if kind == PaintByExampleReferenceEncoder.kind:
        encoder = PaintByExampleImageEncoder(CLIPVisionConfig.from_dict(backbone), proj_size=int(config["proj_size"]))
        return PaintByExampleReferenceEncoder(encoder)
    raise CheckpointError(
        f"image encoder type {kind!r} is not supported (expected {Dinov2ReferenceEncoder.kind!r} or "
        f"{PaintByExampleReferenceEncoder.kind!r})"
    )
