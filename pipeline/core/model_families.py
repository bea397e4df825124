"""Which model family a `model.source` is, and the sampling defaults it carries, without torch.

The driver tells the family from the source's own files before any GPU is requested: a DTC checkpoint (`dtc.json`,
or a Paint-by-Example pipeline folder that loads as a DTC with a zero hint branch) or a FLUX.2 [klein] diffusers
pipeline folder (`model_index.json` naming `Flux2KleinPipeline` or `Flux2KleinInpaintPipeline`). Each family, and
each checkpoint where it records them, brings its own sampling defaults: the run's `sampling` settings override
only what they name. A klein folder is checked whole here (every component, safetensors only, a sharded text
encoder's every shard), so a bad folder stops the job with its reason instead of failing every inference actor.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.model_sources import KLEIN_TINY_MODEL, MODEL_NAMES, PACKAGED_MODELS
from pipeline.core.sampling import DEFAULT_GUIDANCE, DEFAULT_SCHEDULER, DEFAULT_STEPS
from pipeline.core.weights import CheckpointError, WeightsLocation, is_pickle, pickle_refused

Family = Literal["dtc", "flux2-klein"]
DTC: Family = "dtc"
KLEIN: Family = "flux2-klein"
FAMILIES: tuple[Family, ...] = (DTC, KLEIN)

DTC_INDEX = "dtc.json"
PIPELINE_INDEX = "model_index.json"
# The public FLUX.2 [klein] folders name the text-to-image class; the inpainting class loads the same components.
KLEIN_PIPELINES = ("Flux2KleinPipeline", "Flux2KleinInpaintPipeline")
KLEIN_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
KLEIN_WEIGHTED = ("transformer", "vae", "text_encoder")
# klein's crops: the public VAE downsamples by 8 and the transformer takes 2x2 patches.
KLEIN_MULTIPLE = 16
# klein's scheduler, for the metadata rows: the sampler is the pipeline's own, not one of `Scheduler`.
KLEIN_SCHEDULER = "flow_match_euler"
# DTC's reference is its image encoder's input (DINOv2 / CLIP at 224 px).
DTC_REFERENCE_SIZE = 224
DTC_RESOLUTION = 512


@dataclass(frozen=True)
class ModelDefaults:
    """What a model samples with unless the run's settings say otherwise."""

    family: Family
    resolution: int
    reference_size: int
    steps: int
    guidance: float
    scheduler: str  # a `Scheduler` name for DTC; KLEIN_SCHEDULER for klein (not a setting)
    strength: float | None = None  # klein: how much of the crop is noised (1.0: all of it); DTC has none
    distilled: bool = False  # klein: step-distilled (guidance is ignored by the pipeline)


# The paper's sampling (DDIM, 40 steps, guidance 5) at 512 px for DTC sources that record nothing else.
DTC_DEFAULTS = ModelDefaults(family=DTC, resolution=DTC_RESOLUTION, reference_size=DTC_REFERENCE_SIZE,
                             steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE, scheduler=DEFAULT_SCHEDULER)
# Step-distilled klein (the public 4B and 9B): 4 steps without classifier-free guidance, as the model cards and
# diffusers' examples run it; the whole crop noised (strength 1.0), as diffusers' reference-inpainting example does.
# Crops at 1024 px, the pipeline's default size (and the model's training size); the product's reference at 512 px,
# about the size a product takes in such a crop with the default context margin.
KLEIN_DISTILLED_DEFAULTS = ModelDefaults(family=KLEIN, resolution=1024, reference_size=512, steps=4, guidance=1.0,
                                         scheduler=KLEIN_SCHEDULER, strength=1.0, distilled=True)
# The undistilled "base" klein folders: the model cards' 50 steps with guidance 4.
KLEIN_BASE_DEFAULTS = ModelDefaults(family=KLEIN, resolution=1024, reference_size=512, steps=50, guidance=4.0,
                                    scheduler=KLEIN_SCHEDULER, strength=1.0, distilled=False)
# The tiny random klein (tests, benchmarks on CPU): its VAE downsamples by 2, so 64 px crops are 32x32 latents.
KLEIN_TINY_DEFAULTS = ModelDefaults(family=KLEIN, resolution=64, reference_size=64, steps=4, guidance=1.0,
                                    scheduler=KLEIN_SCHEDULER, strength=1.0, distilled=True)
# What a checkpoint's dtc.json may record under "sampling" to override DTC_DEFAULTS (the demo model does).
DTC_RECORDED = ("steps", "guidance", "scheduler")


def _read_json(fs: Any, path: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(fs.cat_file(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        name = posixpath.basename(path)
        raise CheckpointError(f"{where}: cannot read {name}: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: {posixpath.basename(path)} is not a JSON object")
    return value


def model_defaults(source: str, location: WeightsLocation | None, *, where: str) -> ModelDefaults:
    """The family and sampling defaults of `source`; `location` is its checked weights location (None for a named
    model). Raises CheckpointError naming `where` for a folder that is neither family, or a klein folder that
    cannot load."""
    if source == KLEIN_TINY_MODEL:
        return KLEIN_TINY_DEFAULTS
    if source in MODEL_NAMES and source not in PACKAGED_MODELS:
        return DTC_DEFAULTS
    if location is None or not location.is_dir:
        raise CheckpointError(f"{where}: a model is a folder (a DTC checkpoint or a FLUX.2 [klein] pipeline)")
    root = location.path.rstrip("/")
    names = {f[len(root) + 1:] for f in location.files if f.startswith(root + "/")}
    if DTC_INDEX in names:
        return _dtc_defaults(_read_json(location.fs, f"{root}/{DTC_INDEX}", where), where)
    if PIPELINE_INDEX not in names:
        raise CheckpointError(f"{where}: neither a DTC checkpoint ({DTC_INDEX}) nor a diffusers pipeline folder "
                              f"({PIPELINE_INDEX})")
    index = _read_json(location.fs, f"{root}/{PIPELINE_INDEX}", where)
    pipeline_class = index.get("_class_name")
    if pipeline_class == "PaintByExamplePipeline":
        return DTC_DEFAULTS
    if pipeline_class not in KLEIN_PIPELINES:
        raise CheckpointError(
            f"{where}: {PIPELINE_INDEX} names {pipeline_class!r}, which tryall does not run: a DTC checkpoint, a "
            f"Paint-by-Example pipeline or a FLUX.2 [klein] pipeline ({' or '.join(KLEIN_PIPELINES)}); convert an "
            "SD-inpainting pipeline with `python -m pipeline.model convert`"
        )
    check_klein_folder(location, names, index, where)
    return KLEIN_DISTILLED_DEFAULTS if index.get("is_distilled", False) else KLEIN_BASE_DEFAULTS


def _dtc_defaults(index: dict[str, Any], where: str) -> ModelDefaults:
    resolution = index.get("default_resolution", DTC_RESOLUTION)
    recorded = index.get("sampling") or {}
    if not isinstance(resolution, int) or not isinstance(recorded, dict) or set(recorded) - set(DTC_RECORDED):
        raise CheckpointError(f"{where}: {DTC_INDEX}: default_resolution must be an integer and sampling an object "
                              f"of {', '.join(DTC_RECORDED)}")
    values = {"resolution": resolution, **recorded}
    return ModelDefaults(**{**DTC_DEFAULTS.__dict__, **values})


def check_klein_folder(location: WeightsLocation, names: set[str], index: dict[str, Any], where: str) -> None:
    """Every component the pipeline loads is there, with safetensors weights only (a sharded component's index and
    every shard it names), so `from_pretrained` cannot fail on a missing file or fall back to a pickle."""
    missing = [c for c in KLEIN_COMPONENTS if c not in index]
    if missing:
        raise CheckpointError(f"{where}: {PIPELINE_INDEX} lists no {', '.join(missing)}: not a complete FLUX.2 "
                              "[klein] pipeline folder")
    for component in KLEIN_COMPONENTS:
        inside = {n[len(component) + 1:] for n in names if n.startswith(component + "/")}
        if not inside:
            raise CheckpointError(f"{where}: the {component}/ folder is missing or empty")
        if component in KLEIN_WEIGHTED:
            _check_component_weights(location, component, inside, where)
    if not {"tokenizer.json", "vocab.json"} & {n[len("tokenizer/"):] for n in names if n.startswith("tokenizer/")}:
        raise CheckpointError(f"{where}: tokenizer/ holds neither tokenizer.json nor vocab.json")
    if "scheduler/scheduler_config.json" not in names:
        raise CheckpointError(f"{where}: scheduler/scheduler_config.json is missing")


def _check_component_weights(location: WeightsLocation, component: str, inside: set[str], where: str) -> None:
    config = "config.json"
    if config not in inside:
        raise CheckpointError(f"{where}: {component}/{config} is missing")
    tensors = sorted(n for n in inside if n.endswith(".safetensors"))
    indexes = sorted(n for n in inside if n.endswith(".safetensors.index.json"))
    if not tensors:
        pickles = sorted(n for n in inside if is_pickle(n))
        if pickles:
            raise pickle_refused(f"{location.path.rstrip('/')}/{component}/{pickles[0]}", where)
        raise CheckpointError(f"{where}: {component}/ holds no safetensors weights")
    for name in indexes:  # a sharded component: every shard its index names must be there
        shard_index = _read_json(location.fs, f"{location.path.rstrip('/')}/{component}/{name}", where)
        weight_map = shard_index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{where}: {component}/{name} has no weight_map")
        absent = sorted(set(weight_map.values()) - inside)
        if absent:
            raise CheckpointError(f"{where}: {component}/{name} names shards that are missing: {', '.join(absent)}")


def describe(defaults: ModelDefaults) -> dict[str, Any]:
    """For the run's summary: the family and what it samples with unless told otherwise."""
    return {k: v for k, v in defaults.__dict__.items() if v is not None}
