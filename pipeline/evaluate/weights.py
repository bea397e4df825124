"""What an encoder source holds, read without torch: the driver checks every source and reads each encoder's input
size and normalisation before Ray Data starts, so a wrong path or a pickle file is a job error, not a failed actor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pipeline.config import S3Config
from pipeline.errors import JobError, PairError
from pipeline.model_sources import PICKLE_SUFFIXES
from pipeline.storage import filesystem, join, read_bytes

EncoderKind = Literal["clip", "dinov2"]
RANDOM_ENCODER = "tiny"
# DINOv2 is evaluated at 224 px (16 x 16 patches of 14), as dgm-eval's FD-DINOv2 and the hub's preprocessor do, not
# at the 518 px its config records for training.
DINOV2_EVAL_SIZE = 224
# transformers.image_utils' OPENAI_CLIP_* and IMAGENET_DEFAULT_* (repeated: this module must not import torch).
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINY_CLIP_SIZE = 224


@dataclass(frozen=True)
class Preprocessing:
    """What an encoder expects: a square of `size` pixels, normalised with `mean` and `std` (per channel, 0..1)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def preprocessing_of(kind: EncoderKind, config: dict, processor: dict | None) -> Preprocessing:
    """From the folder's preprocessor_config.json when it has one, else the encoder family's usual values."""
    mean, std = (CLIP_MEAN, CLIP_STD) if kind == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    size = int(config.get("image_size", 224)) if kind == "clip" else DINOV2_EVAL_SIZE
    if processor:
        crop = processor.get("crop_size")
        size = int(crop.get("height", size) if isinstance(crop, dict) else crop or size)
        mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
    return Preprocessing(size=size, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


def _json_at(uri: str, s3: S3Config | None, source: str) -> dict | None:
    try:
        data = json.loads(read_bytes(uri, s3))
    except PairError:
        return None
    except ValueError as exc:
        raise JobError(f"encoder {source}: {uri} is not JSON: {exc}") from None
    return data if isinstance(data, dict) else None


def check_source(kind: EncoderKind, source: str, s3: S3Config | None) -> Preprocessing:
    """A usable encoder folder (config.json and safetensors weights, no pickle only) and its preprocessing."""
    if source == RANDOM_ENCODER:
        return preprocessing_of(kind, {"image_size": TINY_CLIP_SIZE}, None)
    where = f"encoders.{kind} {source}"
    if source.rstrip("/").lower().endswith(PICKLE_SUFFIXES):
        raise JobError(f"{where}: pickle-format weights are refused (tryall never unpickles files)")
    try:
        fs, path = filesystem(source, s3)
        files = [str(f) for f in fs.find(path)] if fs.isdir(path) else []
    except Exception as exc:  # noqa: BLE001 - any storage failure here is a job error with its cause
        raise JobError(f"{where}: cannot be reached: {type(exc).__name__}: {exc}") from None
    if not files:
        raise JobError(f"{where}: no encoder folder there (expected config.json and model.safetensors)")
    if not any(f.endswith(".safetensors") for f in files):
        pickles = sorted(f for f in files if f.lower().endswith(PICKLE_SUFFIXES))
        if pickles:
            raise JobError(f"{where}: {pickles[0]} is a pickle-format checkpoint, refused (tryall never unpickles "
                           "files); convert it with save_pretrained(..., safe_serialization=True)")
        raise JobError(f"{where}: no safetensors weights in it")
    config = _json_at(join(source, "config.json"), s3, source)
    if config is None:
        raise JobError(f"{where}: no readable config.json (a folder as transformers' save_pretrained writes it)")
    return preprocessing_of(kind, config, _json_at(join(source, "preprocessor_config.json"), s3, source))


def describe(source: str) -> str:
    """How the summary names an encoder source; random weights are said to be so."""
    return f"{source} (random weights: scores are not meaningful)" if source == RANDOM_ENCODER else source
