"""Ray Train's per-worker function: load or resume, stream batches, step, report, checkpoint, draw the contact sheet.

Every worker reports at the same steps (progress, checkpoint and final steps are functions of the step count), and
only rank 0 attaches a checkpoint. The loss figures are sums over all workers, so every worker takes the same
decision when the loss goes bad: each returns (rank 0 writes `stopped.json` into the run folder), the driver raises,
and the checkpoints already written stay the last good ones.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from pipeline.core.provenance import with_training
from pipeline.core.storage import S3Config, exists, filesystem, join, storage_options, write_bytes
from pipeline.train.config import TrainConfig
from pipeline.train.data import dataset_name
from pipeline.train.learner import Learner, StepStats
from pipeline.train.pairs import TrainPair
from pipeline.train.state import MODEL_DIR, TrainState, read_optimizer, read_state, write_checkpoint
from pipeline.train.step import Batch

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
STOPPED_FILE = "stopped.json"  # written when a bad loss stopped the run: what and where
SHEETS_DIR = "samples"


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:08d}"


@dataclass
class Progress:
    """Figures between progress lines, and the rows of metrics.jsonl (rank 0 rewrites the whole file)."""

    total_steps: int
    global_batch: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    first_step: int = 0
    window_start: float = field(default_factory=time.monotonic)
    window_steps: int = 0
    window_loss: float = 0.0

    def add(self, stats: StepStats) -> None:
        self.window_steps += 1
        self.window_loss += stats.loss
        for reason, count in stats.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def row(self, step: int) -> dict[str, Any]:
        now = time.monotonic()
        samples_per_s = self.window_steps * self.global_batch / max(now - self.window_start, 1e-9)
        steps_per_s = (step - self.first_step) / max(now - self.started, 1e-9)
        eta = (self.total_steps - step) / steps_per_s if steps_per_s > 0 else None
        row = {
            "step": step,
            "loss": self.window_loss / max(self.window_steps, 1),
            "samples_per_s": samples_per_s,
            "eta_s": eta,
            "skipped_rows": sum(self.skipped.values()),
            "skipped_by_reason": dict(self.skipped),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.window_start, self.window_steps, self.window_loss = now, 0, 0.0
        return row


def progress_line(row: dict[str, Any], total: int, lr: float) -> str:
    eta = "?" if row["eta_s"] is None else time.strftime("%H:%M:%S", time.gmtime(row["eta_s"]))
    return (
        f"step {row['step']}/{total} loss {row['loss']:.4f} lr {lr:.2e} samples/s {row['samples_per_s']:.2f} "
        f"eta {eta} skipped rows {row['skipped_rows']}"
    )


def read_metrics(run_uri: str, s3: S3Config, up_to: int) -> list[dict[str, Any]]:
    """metrics.jsonl rows of earlier attempts of this run up to the resumed step (later ones were not kept)."""
    uri = join(run_uri, METRICS_FILE)
    if not exists(uri, s3):
        return []
    fs, path = filesystem(uri, s3)
    rows = [json.loads(line) for line in fs.cat_file(path).decode().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= up_to]


def load_start(cfg: TrainConfig, checkpoint: Any) -> tuple[Any, TrainState | None, dict[str, torch.Tensor] | None]:
    """The model to train from (the run's latest checkpoint, else `model.source`) and its saved training state."""
    from pipeline.model import load_dtc

    cpu = torch.device("cpu")
    if checkpoint is None:
        dtc = load_dtc(cfg.model.source, device=cpu, dtype=torch.float32, cache_dir=cfg.model.cache_dir,
                       storage_options=storage_options(cfg.model.source, cfg.s3))
        return dtc, None, None
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        dtc = load_dtc(str(folder / MODEL_DIR), device=cpu, dtype=torch.float32)
        return dtc, read_state(folder), read_optimizer(folder)


def train_loop(config: dict[str, Any]) -> None:
    """The function TorchTrainer runs on every worker. `config`: the settings, the manifest as the user named it
    (for the provenance), where this job's data starts, the parts to train and the validation pairs."""
    import ray.train
    import ray.train.torch

    from pipeline.train.sheet import contact_sheet, sample_outputs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig.model_validate(config["cfg"])
    data_start: int = config["start_step"]
    parts: tuple[str, ...] = tuple(config["parts"])
    val_pairs: list[tuple[int, TrainPair]] = config["val_pairs"]
    torch.set_num_threads(max(1, int(cfg.compute.cpus_per_worker)))
    context = ray.train.get_context()
    rank = context.get_world_rank()

    dtc, state, tensors = load_start(cfg, ray.train.get_checkpoint())
    base_provenance = dtc.provenance if state is None else state.base_provenance
    learner = Learner(dtc, cfg, parts=parts, device=ray.train.torch.get_device(),
                      wrap=lambda m: ray.train.torch.prepare_model(m, move_to_device=False))
    progress = Progress(total_steps=cfg.train.steps, global_batch=cfg.global_batch)
    if state is not None:
        if state.global_batch != cfg.global_batch:
            raise ValueError(
                f"this run's checkpoint was trained with a global batch of {state.global_batch} samples, the "
                f"settings now give {cfg.global_batch} (batch_size x grad_accum x num_workers): the data position "
                "would not match; keep them, or start a new run_id"
            )
        learner.restore(state, tensors)
        progress.skipped = dict(state.skipped)
    progress.first_step = learner.step_count
    if rank == 0:
        progress.rows = read_metrics(cfg.run_uri, cfg.s3, learner.step_count)
        log.info("training %s from step %d to %d: %s", cfg.run_id, learner.step_count, cfg.train.steps,
                 ", ".join(parts))

    batches = ray.train.get_dataset_shard(dataset_name(rank)).iter_torch_batches(
        batch_size=cfg.train.batch_size, drop_last=True, prefetch_batches=2
    )
    batches = iter(batches)
    # A restart inside this job (a worker died) resumes from a later checkpoint than the job's data began at.
    for _ in range((learner.step_count - data_start) * cfg.train.grad_accum):
        next(batches)
    if learner.step_count < data_start:
        log.warning("the latest checkpoint is at step %d but this job's data begins at step %d",
                    learner.step_count, data_start)

    def save(step: int) -> Any:
        state = TrainState(
            step=step, samples=step * cfg.global_batch, global_batch=cfg.global_batch, trained_parts=list(parts),
            base_provenance=base_provenance, skipped=dict(progress.skipped),
            scaler=learner.scaler.state_dict() if learner.scaler.is_enabled() else None,
        )
        learner.dtc.provenance = with_training(
            base_provenance, list(parts), data_uri=config.get("data_uri", cfg.manifest_uri), steps=step,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        folder = Path(tempfile.mkdtemp(prefix="tryall-train-"))
        write_checkpoint(folder, dtc=learner.dtc, optimizer=learner.optimizer, names=learner.names, state=state)
        return folder

    while learner.step_count < cfg.train.steps:
        micro = [Batch.from_columns(next(batches)) for _ in range(cfg.train.grad_accum)]
        stats = learner.step(micro)
        if not stats.finite:
            step = learner.step_count + 1
            message = (f"the loss at step {step} is {stats.loss} (NaN, infinite or above train.max_loss "
                       f"{cfg.train.max_loss}): training stopped; the last checkpoint before it is kept")
            log.error(message)
            if rank == 0:  # the driver reads it after fit(): Ray Train's result holds checkpointed metrics only
                record = {"step": step, "loss": stats.loss, "error": message}
                write_bytes(join(cfg.run_uri, STOPPED_FILE), json.dumps(record).encode(), cfg.s3)
            ray.train.report({"step": learner.step_count, "diverged": True})
            return
        progress.add(stats)
        step = learner.step_count
        done = step == cfg.train.steps
        checkpoint_now = done or step % cfg.checkpoint.every_steps == 0
        report_now = checkpoint_now or step % cfg.log.progress_every == 0
        if rank == 0 and (done or step % cfg.log.sheet_every == 0) and val_pairs:
            outputs = sample_outputs(
                learner.dtc, val_pairs, steps=cfg.log.sheet_steps, guidance=cfg.log.sheet_guidance
            )
            sheet = contact_sheet(val_pairs, outputs)
            write_bytes(join(cfg.run_uri, SHEETS_DIR, f"step_{step:08d}.png"), sheet, cfg.s3)
        if not report_now:
            continue
        row = progress.row(step)
        if rank == 0:
            progress.rows.append(row)
            log.info(progress_line(row, cfg.train.steps, stats.lr))
            lines = "".join(json.dumps(r) + "\n" for r in progress.rows)
            write_bytes(join(cfg.run_uri, METRICS_FILE), lines.encode(), cfg.s3)
        folder = save(step) if checkpoint_now and rank == 0 else None
        metrics = {"step": step, "loss": row["loss"], "samples_per_s": row["samples_per_s"],
                   "skipped_rows": row["skipped_rows"], "diverged": False}
        checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_name(step))
        if folder:
            shutil.rmtree(folder, ignore_errors=True)  # uploaded to the run's storage by report
