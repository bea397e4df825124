"""Device and precision choice: CUDA when present, else CPU; half precision on GPU, fp32 on CPU."""

from __future__ import annotations

import torch

from .errors import CheckpointError

# Half precision is what makes the 512 px UNet fast on g5 (A10G) GPUs; CPU kernels for fp16 are slow or missing, and
# bf16 on CPU is not faster than fp32 on the CPUs we run on, so CPU is always fp32.
GPU_DTYPES = (torch.float16, torch.bfloat16)
# The one mapping from the settings' dtype names (pipeline.core.settings.Dtype) to torch dtypes.
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def select_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run on: `prefer` when given (e.g. "cpu", "cuda:1"), else the current CUDA device, else CPU."""
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CheckpointError(f"device {device} was requested but CUDA is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def torch_dtype(name: str) -> torch.dtype | None:
    """`fp16`, `bf16` or `fp32` as a torch dtype; `auto` is None (`resolve_dtype` then picks the device's)."""
    if name == "auto":
        return None
    if name not in DTYPES:
        raise CheckpointError(f"dtype {name!r}: use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPU (the paper's and diffusers' usual inference precision), fp32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def resolve_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """Check a requested dtype against the device; None picks `default_dtype`."""
    if dtype is None:
        return default_dtype(device)
    if device.type == "cuda":
        if dtype not in (*GPU_DTYPES, torch.float32):
            raise CheckpointError(f"dtype {dtype} is not supported on {device}: use fp16, bf16 or fp32")
        return dtype
    if device.type == "meta":
        return dtype
    if dtype != torch.float32:
        raise CheckpointError(f"dtype {dtype} is not supported on {device}: CPU inference runs in fp32")
    return dtype
