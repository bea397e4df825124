"""Where a DTC's weights came from and which of its parts were trained: dtc.json's `provenance`, without torch.

A converted DTC has a zero hint branch, so it is its base network (Paint-by-Example, or SD-inpainting + an untrained
DINOv2 projection) and not yet a Diffuse-to-Choose model; only training makes the hint branch matter. The record says
which it is, so `python -m pipeline.model info` and each run's summary can tell:

    {"base": {"kind": "random", "config": "tiny", "seed": 0}
             | {"kind": "paint_by_example", "source": "<pipeline directory>"}
             | {"kind": "sd_inpaint_dinov2", "sd_inpaint": "<pipeline directory>", "dinov2": "<model directory>"}
             | {"kind": "unrecorded"},                  # written before checkpoints recorded provenance
     "trained_parts": ["unet.decoder", "hint.adapter", ...],   # PART_NAMES; empty: nothing trained since `base`
     "training": {"data_uri": "s3://...", "steps": 1200, "finished_at": "2026-12-02T07:00:00Z"} | null}

The driver must not import torch (importing `pipeline.model` does), so this module reads and checks the record with
fsspec and json only; the model package imports it to write the same record.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec

from pipeline.core.errors import JobError
from pipeline.core.model_sources import MODEL_NAMES, PACKAGED_MODELS, checkpoint_location

INDEX_FILE = "dtc.json"

# The parts a trainer can train (or freeze), as `pipeline.model.DTC.part_parameters` splits the network.
PART_NAMES = (
    "unet.encoder",  # conv_in, time embedding, down blocks, mid block
    "unet.decoder",  # up blocks, conv_norm_out, conv_out
    "vae",
    "image_encoder.backbone",  # DINOv2, or Paint-by-Example's CLIP vision model
    "image_encoder.projection",  # the layers from the backbone's tokens to the UNet's cross-attention width
    "image_encoder.uncond_vector",  # guidance's learned null token
    "hint.adapter",
    "hint.encoder",
    "hint.film",
)
# Zero-initialised in a new DTC: until both are trained, the collage cannot change the output.
HINT_BRANCH_KEY_PARTS = ("hint.adapter", "hint.film")
BASE_KINDS = ("random", "paint_by_example", "sd_inpaint_dinov2", "unrecorded")
TRAINING_KEYS = ("data_uri", "steps", "finished_at")


def random_provenance(config: str, seed: int) -> dict[str, Any]:
    """A DTC of a named configuration with seeded random weights, never trained."""
    return {"base": {"kind": "random", "config": config, "seed": int(seed)}, "trained_parts": [], "training": None}


def paint_by_example_provenance(source: str) -> dict[str, Any]:
    """A DTC built from a Paint-by-Example pipeline directory (zero hint branch)."""
    return {"base": {"kind": "paint_by_example", "source": str(source)}, "trained_parts": [], "training": None}


def sd_inpaint_provenance(sd_inpaint: str, dinov2: str) -> dict[str, Any]:
    """A DTC built from an SD-inpainting pipeline and a DINOv2 model (new projection, zero hint branch)."""
    base = {"kind": "sd_inpaint_dinov2", "sd_inpaint": str(sd_inpaint), "dinov2": str(dinov2)}
    return {"base": base, "trained_parts": [], "training": None}


def unrecorded_provenance() -> dict[str, Any]:
    """What a checkpoint without a `provenance` key is: no trainer existed when those were written, so untrained."""
    return {"base": {"kind": "unrecorded"}, "trained_parts": [], "training": None}


def with_training(
    provenance: dict[str, Any], trained_parts: list[str], *, data_uri: str, steps: int, finished_at: str
) -> dict[str, Any]:
    """`provenance` after a training run: its parts join `trained_parts`, and `training` describes the run (an earlier
    run's record is kept under `training.previous`). `finished_at` is an ISO 8601 UTC time."""
    provenance = check_provenance(provenance, "provenance")
    parts = sorted(set(provenance["trained_parts"]) | set(trained_parts), key=PART_NAMES.index)
    training: dict[str, Any] = {"data_uri": str(data_uri), "steps": int(steps), "finished_at": str(finished_at)}
    if provenance["training"] is not None:
        training["previous"] = provenance["training"]
    return check_provenance({**provenance, "trained_parts": parts, "training": training}, "provenance")


def hint_branch_trained(provenance: dict[str, Any] | None) -> bool:
    """Whether the hint branch was trained (both its zero-initialised parts); None (a named random model) is not."""
    if provenance is None:
        return False
    parts = set(provenance.get("trained_parts") or [])
    return all(part in parts for part in HINT_BRANCH_KEY_PARTS)


def check_provenance(value: Any, where: str) -> dict[str, Any]:
    """A copy of `value` if it is a well-formed provenance record, else ValueError naming `where` and the field."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: provenance must be an object, got {type(value).__name__}")
    base = value.get("base")
    if not isinstance(base, dict) or base.get("kind") not in BASE_KINDS:
        raise ValueError(f"{where}: provenance.base must be an object whose kind is one of {list(BASE_KINDS)}")
    parts = value.get("trained_parts")
    if not isinstance(parts, list) or any(p not in PART_NAMES for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"{where}: provenance.trained_parts must be a list of distinct names from {list(PART_NAMES)}")
    training = value.get("training")
    if training is not None:
        if not isinstance(training, dict) or any(k not in training for k in TRAINING_KEYS):
            raise ValueError(f"{where}: provenance.training must be null or an object with {list(TRAINING_KEYS)}")
        steps = training["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"{where}: provenance.training.steps must be an integer >= 0, got {steps!r}")
    if parts and training is None:
        raise ValueError(f"{where}: provenance.trained_parts is not empty but provenance.training is null")
    return json.loads(json.dumps(value))


def read_provenance(source: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The provenance of the model a `model.source` names, read from its dtc.json (a few hundred bytes; no torch).

    None for the named models (`tiny`, `sd15`: random weights; `noop`), which are untrained. A Paint-by-Example
    pipeline directory gives the record the model package builds for it. `storage_options` go to
    `fsspec.url_to_fs` (e.g. an S3 endpoint and credentials). JobError if the source is no model.
    """
    if source in PACKAGED_MODELS:
        source = checkpoint_location(source)
    elif source in MODEL_NAMES:
        return None
    try:
        fs, root = fsspec.url_to_fs(source, **(storage_options or {}))
        index_path = f"{root.rstrip('/')}/{INDEX_FILE}"
        pipeline_path = f"{root.rstrip('/')}/model_index.json"
        if fs.exists(index_path):
            index = json.loads(fs.cat_file(index_path))
        elif fs.exists(pipeline_path):
            if json.loads(fs.cat_file(pipeline_path)).get("_class_name") == "PaintByExamplePipeline":
                return paint_by_example_provenance(source)
            raise JobError(f"model.source {source}: a pipeline directory, not a DTC checkpoint (no {INDEX_FILE})")
        else:
            raise JobError(f"model.source {source}: not a DTC checkpoint (no {INDEX_FILE})")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError(f"model.source {source}: cannot read {INDEX_FILE}: {type(exc).__name__}: {exc}") from None
    if not isinstance(index, dict):
        raise JobError(f"model.source {source}: {INDEX_FILE} is not a JSON object")
    if "provenance" not in index:
        return unrecorded_provenance()
    try:
        return check_provenance(index["provenance"], f"model.source {source}: {INDEX_FILE}")
    except ValueError as exc:
        raise JobError(str(exc)) from None
