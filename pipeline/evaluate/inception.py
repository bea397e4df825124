"""The FID network: Inception-v3 as TensorFlow's FID graph defines it (pytorch-fid's `FIDInceptionV3`), up to the
2048-d features after its final average pool.

Hand-written because no installable library provides it here: pytorch-fid, torch-fidelity and clean-fid all build
it from torchvision, which does not import beside this project's torch. Parameter names and shapes are torchvision's
`Inception3`'s, so pytorch-fid's `pt_inception-2015-12-05` weights, converted to safetensors outside tryall, load
with strict key checking. Where the FID graph differs from torchvision's ImageNet Inception, this follows the graph:
the branch average pools of blocks A, C and the first E leave the zero padding out of the mean, and the last block
max-pools its pool branch. Inputs are scaled to [-1, 1] and resized to 299 x 299 (bilinear) as pytorch-fid does;
the evaluation hands it cuts already at 299 x 299, resized by the convention `distribution.fid_resize` names
(pipeline.evaluate.crops).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.weights import CheckpointError, is_pickle, pickle_refused
from pipeline.evaluate.weights import INCEPTION_SIZE
from pipeline.model.build import cast, seeded
from pipeline.model.checkpoint import read_safetensors

FEATURES = 2048
WEIGHTS_FILE = "model.safetensors"
# pytorch-fid's weights carry the 1008-way classifier, which the features never reach: dropped, never loaded.
HEAD_KEYS = frozenset({"fc.weight", "fc.bias"})
# BatchNorm's step counter is unused in eval mode, and weights ported from TensorFlow may lack it.
OPTIONAL_SUFFIX = ".num_batches_tracked"


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001, TensorFlow's), ReLU: torchvision's `BasicConv2d`."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3, stride 1, same size; the mean over the window's pixels inside the image (TensorFlow's padding)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def same_max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class BlockA(nn.Module):
    """35 x 35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pool branches; 224 + pool_features channels out."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return tf_avg_pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(self.pool(x)),
        ], 1)


class BlockB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): strided 3x3, strided double 3x3 and a 3x3 max pool; 768 channels out."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class BlockC(nn.Module):
    """17 x 17 block (Mixed_6b/c/d/e): factorised 7x7 branches of `channels_7x7` channels; 768 channels out."""

    def __init__(self, cin: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return tf_avg_pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            dbl = conv(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(self.pool(x)),
        ], 1)


class BlockD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): strided 3x3, 7x7-then-strided-3x3 and a 3x3 max pool; 1280 channels out."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class BlockE(nn.Module):
    """8 x 8 block (Mixed_7b/c): split 1x3 / 3x1 branches; 2048 channels out. `max_pool`: the FID graph's last
    block, which max-pools its pool branch where the first averages."""

    def __init__(self, cin: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return same_max_pool(x) if self.max_pool else tf_avg_pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(three), self.branch3x3_2b(three),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(self.pool(x)),
        ], 1)


class FIDInception(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, 2048): resized to 299 x 299 (bilinear), then the network to its final pool.

    Resizing after the [-1, 1] scaling gives what pytorch-fid's resize-then-scale gives: both steps are linear."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, pool_features=32)
        self.Mixed_5c = BlockA(256, pool_features=64)
        self.Mixed_5d = BlockA(288, pool_features=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, channels_7x7=128)
        self.Mixed_6c = BlockC(768, channels_7x7=160)
        self.Mixed_6d = BlockC(768, channels_7x7=160)
        self.Mixed_6e = BlockC(768, channels_7x7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def random_fid_inception() -> FIDInception:
    """The `tiny` Inception: the full network with weights from seed 0 (He-normal convolutions, so the activations
    neither vanish nor explode through its depth). Its features, and any FID on them, mean nothing."""
    with seeded(0, torch.device("cpu")):
        model = FIDInception()
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.eval().requires_grad_(False)


def weights_file(path: Path) -> Path:
    """The safetensors file at `path`: the file itself, or a folder's model.safetensors (or its only .safetensors)."""
    if is_pickle(path):
        raise pickle_refused(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: the FID Inception's weights must be a .safetensors file")
        return path
    if not path.is_dir():
        raise CheckpointError(f"no such FID Inception weights: {path} (a .safetensors file or a folder holding "
                              f"{WEIGHTS_FILE})")
    if (path / WEIGHTS_FILE).is_file():
        return path / WEIGHTS_FILE
    found = sorted(path.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    pickles = sorted(p for p in path.iterdir() if is_pickle(p))
    if not found and pickles:
        raise pickle_refused(pickles[0])
    raise CheckpointError(f"{path}: expected {WEIGHTS_FILE} (or a single .safetensors file), found "
                          f"{[p.name for p in found] or 'none'}")


def checked_state_dict(state: dict[str, torch.Tensor], model: nn.Module, where: str) -> dict[str, torch.Tensor]:
    """`state` without the classifier head, once every key and shape matches `model`'s (strict, named errors)."""
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k not in HEAD_KEYS}
    missing = sorted(k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX))
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in state.items()
                        if k in expected and v.shape != expected[k].shape)
    problems = [f"{name} {len(keys)}: {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
                for name, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("mismatched shapes", mismatched)) if keys]
    if problems:
        raise CheckpointError(f"{where}: not the FID Inception-v3's weights (pytorch-fid's pt_inception-2015-12-05 "
                              f"converted to safetensors): {'; '.join(problems)}")
    return state


def load_fid_inception(path: Path, *, device: torch.device, dtype: torch.dtype = torch.float32) -> FIDInception:
    """The FID Inception with the weights at `path` (a local .safetensors file or a folder holding one)."""
    file = weights_file(path)
    model = FIDInception()
    state = checked_state_dict(read_safetensors(file, torch.device("cpu")), model, str(file))
    model.load_state_dict(state, strict=False)  # strictness checked above; only the optional counters may be absent
    return cast(model, device=device, dtype=dtype).eval().requires_grad_(False)
