"""The training job's driver: check the inputs, build each worker's Ray Dataset, run Ray Train's TorchTrainer.

The run folder is Ray Train's own (`RunConfig(storage_path=output_uri, name=run_id)`): its checkpoints and its
record of them, next to our `config.json`, `metrics.jsonl` and `samples/`. Starting the same run_id again resumes:
Ray Train hands the workers the latest checkpoint (`ray.train.get_checkpoint()`), and the driver, which reads the
same record (`ray.train.Result.from_path`), starts each worker's data at that checkpoint's sample.

Each worker has its own dataset (`train_<rank>`, not split by Ray Train) holding exactly its slice of every step
(pipeline.train.data.Schedule): the samples of a step never depend on which worker asked first, so N workers compute
what one worker with N times the batch computes, and every worker gets the same number of equal batches.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import JobError
from pipeline.core.model_sources import MODEL_NAMES
from pipeline.core.provenance import read_provenance
from pipeline.core.storage import absolute, exists, filesystem, join, storage_options, write_bytes
from pipeline.train.config import TrainConfig
from pipeline.train.data import Schedule, dataset_name, load_train_manifest, rank_dataset, validation_pairs
from pipeline.train.parts import resolve_trainable
from pipeline.train.state import STATE_FILE, TrainState

log = logging.getLogger(__name__)


class TrainingStopped(JobError):
    """The loss became NaN or exploded; the run's checkpoints before that step are kept."""


@dataclass(frozen=True)
class TrainOutcome:
    run_uri: str
    steps: int  # optimizer steps done in all (this job and earlier attempts)
    checkpoint_uri: str | None  # the latest checkpoint: a DTC under its model/ folder
    metrics: dict[str, Any]


def run_storage(cfg: TrainConfig) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray Train: S3 through our own s3fs settings (endpoint, retries)."""
    import pyarrow.fs

    if "://" in cfg.output_uri and not cfg.output_uri.startswith("file://"):
        fs, path = filesystem(cfg.output_uri, cfg.s3)
        return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))
    _, path = filesystem(cfg.output_uri)
    return os.path.abspath(path), None


def latest_checkpoint(cfg: TrainConfig) -> tuple[str | None, TrainState | None]:
    """Ray Train's latest checkpoint of this run (the one its workers will resume from) and its training state."""
    from ray.train import Result

    storage_path, storage_fs = run_storage(cfg)
    run_path = f"{storage_path.rstrip('/')}/{cfg.run_id}"
    if not exists(cfg.run_uri, cfg.s3):
        return None, None
    try:
        result = Result.from_path(run_path, storage_filesystem=storage_fs)
    except RuntimeError:  # a folder without Ray Train's record: nothing to resume
        return None, None
    if result.checkpoint is None:
        return None, None
    uri = join(cfg.run_uri, os.path.basename(result.checkpoint.path.rstrip("/")))
    fs, path = filesystem(join(uri, STATE_FILE), cfg.s3)
    return uri, TrainState.from_json(fs.cat_file(path).decode())


def check_inputs(cfg: TrainConfig) -> tuple[str, ...]:
    """Everything that can be checked before a worker starts; JobError (exit 2) naming the problem."""
    try:
        parts = resolve_trainable(cfg.train.trainable)
    except ValueError as exc:
        raise JobError(f"train.trainable: {exc}") from None
    if "vae" in parts:
        raise JobError("train.trainable: the VAE is never trained here (it defines the latent space the loss is "
                       "measured in); use all_but_vae")
    if cfg.model.source not in MODEL_NAMES:
        read_provenance(cfg.model.source, storage_options(cfg.model.source, cfg.s3))  # JobError if no model
    if cfg.train.perceptual_weight > 0:
        from pipeline.train.perceptual import read_vgg_weights

        read_vgg_weights(cfg.train.vgg_weights)  # CheckpointError (a JobError) for pickles and bad files
    return parts


def with_absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its local paths absolute, so the workers (each in its own working directory) find them too."""
    model = cfg.model.model_copy(update={"source": cfg.model.source if cfg.model.source in MODEL_NAMES
                                         else absolute(cfg.model.source)})
    loop = cfg.train.model_copy(update={"vgg_weights": cfg.train.vgg_weights and absolute(cfg.train.vgg_weights)})
    return cfg.model_copy(update={"manifest_uri": absolute(cfg.manifest_uri), "output_uri": absolute(cfg.output_uri),
                                  "model": model, "train": loop})


def train(cfg: TrainConfig) -> TrainOutcome:
    """Run (or resume) the training run `cfg` describes, to `cfg.train.steps` optimizer steps."""
    data_uri = cfg.manifest_uri  # as the user wrote it: the trained model's provenance names it so
    cfg = with_absolute_paths(cfg)
    import ray
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.train.loop import STOPPED_FILE, train_loop

    manifest = load_train_manifest(cfg.manifest_uri, cfg.s3)
    parts = check_inputs(cfg)
    resume_uri, state = latest_checkpoint(cfg)
    start = state.step if state else 0
    if start >= cfg.train.steps:
        log.info("run %s already has %d steps (train.steps %d): nothing to do", cfg.run_id, start, cfg.train.steps)
        return TrainOutcome(cfg.run_uri, start, resume_uri, {})
    if resume_uri:
        log.info("resuming run %s from %s (step %d)", cfg.run_id, resume_uri, start)
    write_bytes(join(cfg.run_uri, "config.json"), json.dumps(cfg.public_dict(), indent=2).encode(), cfg.s3)
    stopped_uri = join(cfg.run_uri, STOPPED_FILE)
    if exists(stopped_uri, cfg.s3):  # an earlier attempt's; this attempt writes its own if it stops too
        fs, path = filesystem(stopped_uri, cfg.s3)
        fs.rm(path)
    val_pairs = validation_pairs(manifest, count=cfg.log.sheet_pairs, seed=cfg.train.seed, cfg=cfg.data, s3=cfg.s3)

    if not ray.is_initialized():
        ray.init()
    workers, accum = cfg.compute.num_workers, cfg.train.grad_accum
    schedule = Schedule(rows=manifest.train.num_rows, seed=cfg.train.seed, batch_size=cfg.train.batch_size,
                        world_size=workers)
    manifest_ref = ray.put(manifest.train)
    datasets = {
        dataset_name(rank): rank_dataset(
            manifest_ref, schedule, rank=rank, first_micro_batch=start * accum,
            micro_batches=(cfg.train.steps - start) * accum, cfg=cfg.data, s3=cfg.s3,
            dropout=cfg.train.reference_dropout, cpus_per_task=cfg.compute.cpus_per_data_task,
        )
        for rank in range(workers)
    }
    resources: dict[str, float] = {"CPU": cfg.compute.cpus_per_worker}
    if cfg.compute.use_gpu:
        resources["GPU"] = 1
        if cfg.compute.accelerator_resource:
            resources[cfg.compute.accelerator_resource] = 1
    storage_path, storage_fs = run_storage(cfg)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "data_uri": data_uri, "start_step": start,
                           "parts": list(parts),
                           "val_pairs": val_pairs},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=cfg.compute.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.run_id,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
            failure_config=FailureConfig(max_failures=cfg.compute.max_failures),
        ),
        datasets=datasets,
        # Not split: each worker reads its own dataset, in order (the schedule fixes which sample is where).
        dataset_config=DataConfig(datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True)),
    )
    result = trainer.fit()
    if exists(stopped_uri, cfg.s3):
        fs, path = filesystem(stopped_uri, cfg.s3)
        raise TrainingStopped(json.loads(fs.cat_file(path))["error"])
    metrics = dict(result.metrics or {})
    checkpoint_uri = None
    if result.checkpoint is not None:
        checkpoint_uri = join(cfg.run_uri, os.path.basename(result.checkpoint.path.rstrip("/")))
    return TrainOutcome(cfg.run_uri, int(metrics.get("step", start)), checkpoint_uri, metrics)
