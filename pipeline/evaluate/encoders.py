"""The evaluation's image encoders: CLIP vision (with its projection) for CLIP-I, DINOv2 for DINO-I and FD-DINOv2,
the FID Inception-v3 (pipeline.evaluate.inception) for FID.

CLIP and DINOv2 weights are folders as transformers saves them (config.json + model.safetensors), loaded by
transformers; the Inception's are one safetensors file (or a folder holding model.safetensors). All by local path,
file:// or s3:// (fetched once per node into the model cache, as the DTC's are), from safetensors only (pickle files
are refused). `tiny` names seeded random encoders for demos and tests: their scores mean nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

from pipeline.evaluate.inception import FEATURES, load_fid_inception, random_fid_inception
from pipeline.evaluate.weights import DINOV2_EVAL_SIZE, RANDOM_ENCODER, TINY_CLIP_SIZE, EncoderKind, Preprocessing
from pipeline.model.build import cast, seeded
from pipeline.model.checkpoint import load_transformers_model
from pipeline.model.device import resolve_dtype, select_device
from pipeline.model.loading import local_path

_TINY_CONFIGS: dict[str, Any] = {
    "clip": lambda: CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=TINY_CLIP_SIZE, patch_size=32, projection_dim=16),
    "dinov2": lambda: Dinov2Config(hidden_size=32, mlp_ratio=2, num_hidden_layers=2, num_attention_heads=4,
                                   image_size=DINOV2_EVAL_SIZE, patch_size=14),
}
_MODELS = {"clip": CLIPVisionModelWithProjection, "dinov2": Dinov2Model}
_CONFIGS = {"clip": CLIPVisionConfig, "dinov2": Dinov2Config}


class ImageEmbedder:
    """One encoder on one device: uint8 squares in, one float32 embedding per image out."""

    def __init__(self, kind: EncoderKind, model: nn.Module, preprocessing: Preprocessing) -> None:
        self.kind = kind
        self.model = model.eval().requires_grad_(False)
        self.preprocessing = preprocessing
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.dim = FEATURES if kind == "inception" else int(
            model.config.projection_dim if kind == "clip" else model.config.hidden_size)

    def pixel_values(self, pixels: np.ndarray) -> torch.Tensor:
        """(B, S, S, 3) on the 0..255 scale (uint8; float32 for the FID Inception's unrounded resize) -> (B, 3, S, S)
        normalised, on the encoder's device and dtype."""
        p = self.preprocessing
        if pixels.shape[1:] != (p.size, p.size, 3):
            raise ValueError(f"{self.kind} expects {p.size}x{p.size} RGB images, got {pixels.shape[1:]}")
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(p.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(p.std, device=self.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """CLIP: the projected image embedding (what `clip.encode_image` gives). DINOv2: the CLS token after the final
        layer norm (`pooler_output`), the feature DINO-I and FD-DINOv2 use. Inception: the 2048-d pool features."""
        x = self.pixel_values(pixels)
        if self.kind == "inception":
            return self.model(x).float().cpu().numpy()
        out = self.model(pixel_values=x)
        features = out.image_embeds if self.kind == "clip" else out.pooler_output
        return features.float().cpu().numpy()


def random_encoder(kind: EncoderKind) -> nn.Module:
    """The `tiny` encoder: small (the Inception full-size: FID needs its 2048-d features), with weights from seed 0
    (the same on every worker)."""
    if kind == "inception":
        return random_fid_inception()
    with seeded(0, torch.device("cpu")):
        return _MODELS[kind](_TINY_CONFIGS[kind]())


def load_embedder(kind: EncoderKind, source: str, preprocessing: Preprocessing, *,
                  device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                  cache_dir: str | None = None, storage_options: dict | None = None) -> ImageEmbedder:
    """The encoder named by `source` (a folder, file://, s3:// or `tiny`) on `device` (default CUDA, else CPU).

    The Inception always runs in fp32, as pytorch-fid runs it: FID moves with the features' precision."""
    device = select_device(device)
    dtype = torch.float32 if kind == "inception" else resolve_dtype(device, dtype)
    if source == RANDOM_ENCODER:
        return ImageEmbedder(kind, cast(random_encoder(kind), device=device, dtype=dtype), preprocessing)
    folder = local_path(source, cache_dir=cache_dir, storage_options=storage_options)
    if kind == "inception":
        return ImageEmbedder(kind, load_fid_inception(folder, device=device, dtype=dtype), preprocessing)
    model = load_transformers_model(_MODELS[kind], _CONFIGS[kind], folder, device=device, dtype=dtype)
    return ImageEmbedder(kind, model, preprocessing)
