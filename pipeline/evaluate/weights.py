"""What an encoder source holds, read without torch: the driver checks every source and reads each encoder's input
size and normalisation before Ray Data starts, so a wrong path or a pickle file is a job error, not a failed actor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pipeline.core.errors import JobError, PairError
from pipeline.core.storage import S3Config, join, read_bytes
from pipeline.core.weights import SAFETENSORS_SUFFIX, check_weights_location

EncoderKind = Literal["clip", "dinov2", "inception"]
RANDOM_ENCODER = "tiny"
# DINOv2 is evaluated at 224 px (16 x 16 patches of 14), as dgm-eval's FD-DINOv2 and the hub's preprocessor do, not
# at the 518 px its config records for training.
DINOV2_EVAL_SIZE = 224
# transformers.image_utils' OPENAI_CLIP_* and IMAGENET_DEFAULT_* (repeated: this module must not import torch).
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINY_CLIP_SIZE = 224
INCEPTION_SIZE = 299
SAFETENSORS_HEADER_MAX = 100_000_000  # the safetensors format's own limit on its JSON header


@dataclass(frozen=True)
class Preprocessing:
    """What an encoder expects: a square of `size` pixels, normalised with `mean` and `std` (per channel, 0..1)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# The FID Inception sees 299 x 299 inputs scaled from [0, 1] to [-1, 1], as pytorch-fid feeds it.
INCEPTION = Preprocessing(size=INCEPTION_SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


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


def _safetensors_header(fs, path: str, where: str) -> dict:
    """The JSON header of a safetensors file (8 bytes of length, then the header): read, not the tensors."""
    try:
        with fs.open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 0 < length <= SAFETENSORS_HEADER_MAX:
                raise ValueError(f"header length {length}")
            header = json.loads(handle.read(length))
    except Exception as exc:  # noqa: BLE001 - any failure to read it is the job's error, with its cause
        raise JobError(f"{where}: {path} is not a readable safetensors file: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict):
        raise JobError(f"{where}: {path} is not a safetensors file (its header is not a JSON object)")
    return header


def check_inception_source(source: str, s3: S3Config | None) -> Preprocessing:
    """A local .safetensors file, or a folder (local or remote) holding model.safetensors (or a single .safetensors
    file), whose header reads; the keys are checked strictly where the weights load (pipeline.evaluate.inception)."""
    where = f"encoders.inception {source}"
    location = check_weights_location(
        source, s3, where=where, what="weights", missing_hint=" (expected a .safetensors file or a folder holding "
        "model.safetensors)")
    if not location.is_dir and "://" in source and not source.startswith("file://"):
        # The node-local model cache (pipeline.model.cache) fetches folders, not single objects.
        raise JobError(f"{where}: a remote source is a folder holding model.safetensors, not the file itself")
    # The loader reads the folder's own files, not its subfolders'.
    top = location.path.rstrip("/")
    files = [f for f in location.files if f.rpartition("/")[0] == top] if location.is_dir else [location.path]
    weights = [f for f in files if f.endswith(SAFETENSORS_SUFFIX)]
    named = [f for f in weights if f.rpartition("/")[2] == "model.safetensors"]
    if len(named) == 1 or len(weights) == 1:
        _safetensors_header(location.fs, (named or weights)[0], where)
        return INCEPTION
    raise JobError(f"{where}: expected one .safetensors file (model.safetensors), found {len(weights)}")


def check_source(kind: EncoderKind, source: str, s3: S3Config | None) -> Preprocessing:
    """A usable encoder source (a folder of config.json and safetensors weights, no pickle; for the FID Inception a
    safetensors file) and its preprocessing."""
    if kind == "inception":
        return INCEPTION if source == RANDOM_ENCODER else check_inception_source(source, s3)
    if source == RANDOM_ENCODER:
        return preprocessing_of(kind, {"image_size": TINY_CLIP_SIZE}, None)
    where = f"encoders.{kind} {source}"
    expected = " (expected config.json and model.safetensors)"
    if not check_weights_location(source, s3, where=where, what="encoder folder", missing_hint=expected).is_dir:
        raise JobError(f"{where}: not a folder{expected}")
    config = _json_at(join(source, "config.json"), s3, source)
    if config is None:
        raise JobError(f"{where}: no readable config.json (a folder as transformers' save_pretrained writes it)")
    return preprocessing_of(kind, config, _json_at(join(source, "preprocessor_config.json"), s3, source))


def describe(source: str) -> str:
    """How the summary names an encoder source; random weights are said to be so."""
    return f"{source} (random weights: scores are not meaningful)" if source == RANDOM_ENCODER else source
