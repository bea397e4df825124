"""Pre-flight: everything that can stop the whole job is checked before Ray Data starts, so a bad job fails fast
without requesting a GPU (exit status 2, nothing computed)."""

from __future__ import annotations

import logging

from pipeline.core.errors import JobError
from pipeline.core.model_families import DTC, KLEIN, ModelDefaults, describe, model_defaults
from pipeline.core.model_sources import MODEL_NAMES, NOOP_MODEL, RANDOM_MODELS, checkpoint_location
from pipeline.core.provenance import hint_branch_trained, read_provenance
from pipeline.core.settings import ConfigError
from pipeline.core.storage import storage_options
from pipeline.core.weights import check_weights_location
from pipeline.inference import record
from pipeline.inference.config import RunConfig

log = logging.getLogger(__name__)

# Sources whose images are not a trained model's: seeded random weights, or the crop returned unchanged.
UNTRAINED_SOURCES = (*RANDOM_MODELS, NOOP_MODEL)


def _setting(cfg: RunConfig, variant: str, name: str) -> str:
    """The setting's name as the user writes it: `model.source`, or `variants.<name>.model.source` in an A/B run."""
    return f"variants.{variant}.{name}" if cfg.variants else name


def _not_set(setting: str) -> ConfigError:
    return ConfigError(f"{setting} is not set: name a trained checkpoint (a path or s3:// URI), or 'demo'")


def require_trained_models(cfg: RunConfig) -> None:
    """A production job (nightly, backfill, ab) computes with a model the user named, never a random one by default:
    it would record every pair `ok` with noise where the product goes."""
    for name in cfg.variant_names():
        model = cfg.for_variant(name).model
        if model.source is None:
            raise _not_set(_setting(cfg, name, "model.source"))
        if model.source in UNTRAINED_SOURCES and not model.allow_random_weights:
            raise ConfigError(
                f"{_setting(cfg, name, 'model.source')}: {model.source!r} has random weights (or none), so every "
                "image would be noise where the product goes; name a trained checkpoint (a path or s3:// URI, or "
                f"'demo'), or set {_setting(cfg, name, 'model.allow_random_weights')}: true to run it anyway"
            )


def check_output_writable(cfg: RunConfig) -> None:
    """Write config.json now: an unreachable bucket or a missing permission stops the job here, not mid-run."""
    try:
        record.write_config(cfg)
    except Exception as exc:  # noqa: BLE001 - any storage failure here is a job error with its cause
        raise JobError(f"cannot write to output {cfg.run_uri}: {type(exc).__name__}: {exc}") from None


def check_model_source(cfg: RunConfig, setting: str = "model.source") -> ModelDefaults:
    """The model must be named, and a checkpoint named by path or URI must exist and hold safetensors weights; a
    diffusers folder must be a pipeline tryall runs, complete. Returns the model's family and sampling defaults.

    Pickle-format files (.bin, .ckpt, ...) are refused here as the model package would refuse them in the
    inference actor: a job error now, not a failed actor after the GPUs were requested.
    """
    if cfg.model.source is None:
        raise _not_set(setting)
    source = checkpoint_location(cfg.model.source)  # a packaged model's files are checked like any checkpoint's
    if source in MODEL_NAMES:
        return model_defaults(source, None, where=f"{setting} {source}")
    named = "" if "/" in source or "://" in source else f" and it is not a model name ({', '.join(MODEL_NAMES)})"
    where = f"{setting} {source}"
    location = check_weights_location(source, cfg.s3, where=where, what="checkpoint", missing_hint=named)
    return model_defaults(source, location, where=where)


def model_records(cfg: RunConfig, defaults: dict[str, ModelDefaults]) -> dict[str, dict]:
    """Per variant: the model source, its family and sampling defaults; for a DTC, which of its parts were trained and
    whether its hint branch was, from dtc.json.

    A DTC whose hint branch was never trained is its base network (Paint-by-Example, or random weights), not DTC:
    the summary says so, and so does the log before the run starts.
    """
    records = {}
    for name in cfg.variant_names():
        source = cfg.for_variant(name).model.source
        record_ = {"source": source, "family": defaults[name].family, "defaults": describe(defaults[name])}
        if defaults[name].family == DTC:
            provenance = read_provenance(source, storage_options(source, cfg.s3))
            trained = hint_branch_trained(provenance)
            if not trained:
                log.warning("variant %s: model %s has an untrained hint branch (zero FiLM): it is its base network, "
                            "not a trained DTC", name, source)
            # provenance None: a named model (seeded random weights, or noop), never trained.
            record_.update(hint_branch_trained=trained, provenance=provenance)
        records[name] = record_
    return records


def preflight(cfg: RunConfig) -> tuple[RunConfig, dict[str, dict]]:
    """Every variant's model, then the output location. Returns the run with each model's sampling defaults filled
    in (what config.json records) and the variants' model records for the summary."""
    defaults = {name: check_model_source(cfg.for_variant(name), _setting(cfg, name, "model.source"))
                for name in cfg.variant_names()}
    cfg = cfg.with_model_defaults(defaults)
    for name in cfg.variant_names():
        variant = cfg.for_variant(name)
        sampling = variant.sampling
        what = (f"strength {sampling.strength}, prompt {sampling.prompt!r}" if variant.model.family == KLEIN
                else f"scheduler {sampling.scheduler}")
        log.info("%s: %s model %s, %d px crops, %d steps, guidance %g, %s", f"variant {name}" if cfg.variants
                 else "model", variant.model.family, variant.model.source, sampling.resolution, sampling.steps,
                 sampling.guidance, what)
    models = model_records(cfg, defaults)
    check_output_writable(cfg)
    return cfg, models
