"""VGG16 perceptual distance on the first three blocks (relu1_2, relu2_2, relu3_3), weights read from safetensors.

Built in plain torch with torchvision's layer indices (`features.0.weight`, ...), so torchvision's ImageNet VGG16
weights load once converted to safetensors; pickle files (.pth, .pt, .bin, ...) are refused, never opened.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.weights import CheckpointError, is_pickle, pickle_refused
from pipeline.model.checkpoint import read_safetensors
from pipeline.model.configs import IMAGENET_MEAN, IMAGENET_STD

# torchvision's vgg16().features up to relu3_3: (out channels) per conv, "M" for max-pool.
_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256)
_TAPS = (3, 8, 15)  # indices of relu1_2, relu2_2, relu3_3 in torchvision's numbering


def vgg_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for spec in _LAYERS:
        if spec == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(channels, int(spec), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
        channels = int(spec)
    return nn.Sequential(*layers)


def read_vgg_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The `features` tensors of a VGG16 safetensors file (keys `features.N.*` or `N.*`); later layers are ignored."""
    path = Path(path)
    if is_pickle(path):
        raise pickle_refused(path)
    if not path.is_file():
        raise CheckpointError(f"VGG weights {path} do not exist")
    state = read_safetensors(path, torch.device("cpu"))
    wanted = vgg_features().state_dict().keys()
    found = {k.removeprefix("features."): v for k, v in state.items()}
    missing = [k for k in wanted if k not in found]
    if missing:
        raise CheckpointError(f"{path}: not VGG16 features weights (missing {missing[:3]})")
    return {k: found[k] for k in wanted}


class VGGPerceptual(nn.Module):
    """Mean squared distance between VGG features of two image batches in [-1, 1], per sample. Frozen."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.features = vgg_features()
        self.features.load_state_dict(weights)
        self.features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image, target]) * 0.5 + 0.5
        x = (x - self.mean) / self.std
        loss = torch.zeros(image.shape[0], device=image.device)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                ours, theirs = x.chunk(2)
                loss = loss + F.mse_loss(ours, theirs, reduction="none").mean(dim=(1, 2, 3))
            if i == _TAPS[-1]:
                break
        return loss
