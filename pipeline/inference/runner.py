"""One run from configuration to summary, read top to bottom in `run`: pre-flight checks, selection, the plan, one
Ray Data pass per variant, the record.

Everything that can stop the whole job is checked before the Ray Data pipeline starts (`checks`), so a bad job
fails fast without requesting a GPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.core.errors import WORKER_LOST, RunStopped
from pipeline.core.model_families import KLEIN
from pipeline.inference import planning, record, selection
from pipeline.inference.checks import preflight
from pipeline.inference.config import RunConfig
from pipeline.inference.graph import BLOCK_ROWS, build_dataset
from pipeline.inference.manifests import load_manifests
from pipeline.inference.metadata_row import ROW_SCHEMA, metadata_row
from pipeline.inference.planning import PlannedPass
from pipeline.inference.progress import Progress
from pipeline.inference.prompts import known_prompts
from pipeline.inference.ray_runtime import release_actors, start_local_ray, warn_if_few_cpus

log = logging.getLogger(__name__)

# Prompts known up front are encoded as an inference actor starts; more than this many are encoded as they come.
PRELOADED_PROMPTS = 128


@dataclass(frozen=True)
class RunResult:
    summary: dict
    run_uri: str


def run(cfg: RunConfig) -> RunResult:
    """Run (or resume) `cfg.run_id`; returns the summary that was written last to the run folder."""
    started = time.monotonic()
    started_at = selection.now_iso()
    # 1. Pre-flight: manifests, models, output location. Job errors stop here, before Ray starts.
    manifests = load_manifests(cfg.catalogue_uri, cfg.scenes_uri, cfg.pairs_uri, cfg.s3,
                               variants=cfg.variant_names())
    cfg, models = preflight(cfg)  # from here on, every variant's sampling is explicit
    # 2. Which products, and what earlier attempts of this run id already finished.
    choice = selection.choose(cfg, manifests, started_at=started_at)
    record.clear_summary(cfg)
    done = record.done_key_set(cfg, retry_failed=cfg.retry_failed)
    # 3. The plan: CPU tasks only, so no GPU is requested before it is written.
    if not ray.is_initialized():
        start_local_ray(cfg)
    warn_if_few_cpus(cfg)
    passes = planning.write_plan(cfg, manifests, choice, done)
    todo, done_pairs = sum(p.pairs for p in passes), len(done)
    del done  # 16 bytes a recorded pair: planning's, not held through the passes
    log.info("run %s: %d pairs to compute, %d already done; output %s", cfg.run_id, todo, done_pairs, cfg.run_uri)
    # 4. One pass per variant, rows recorded as they finish.
    prompts = run_prompts(cfg, choice.catalogue)
    gpu_s = 0.0
    if todo:
        writer = record.MetadataWriter(cfg, part_rows=cfg.record.part_rows, part_seconds=cfg.record.part_seconds)
        progress = Progress(total=todo, interval_s=cfg.progress_interval_s)
        for planned in passes:
            if planned.pairs:
                gpu_s += _run_pass(cfg, planned, writer, progress, prompts.get(planned.variant))
        log.info(progress.line())
    # 5. The summary, written last: its presence means the run finished.
    tally = record.tally_rows(cfg)
    summary = record.build_summary(cfg, tally, attempt_pairs=todo, wall_s=time.monotonic() - started, gpu_s=gpu_s)
    summary.update(started_at=started_at, selection=choice.selection, variants=cfg.variant_names(),
                   by_variant=tally.by_variant(), models=models)
    record.write_summary(cfg, summary)
    planning.remove_plan(cfg)
    return RunResult(summary=summary, run_uri=cfg.run_uri)


def run_prompts(cfg: RunConfig, catalogue: pa.Table) -> dict[str, list[str] | None]:
    """Per text-conditioned variant, every prompt its pairs can give when there are at most PRELOADED_PROMPTS."""
    found = {}
    for name in cfg.variant_names():
        variant = cfg.for_variant(name)
        if variant.model.family == KLEIN:
            found[name] = known_prompts(variant.sampling.prompt, catalogue, PRELOADED_PROMPTS)
            log.info("variant %s: %s", name, f"{len(found[name])} distinct prompts, encoded as each actor starts"
                     if found[name] is not None else f"over {PRELOADED_PROMPTS} distinct prompts, each encoded when "
                     "an actor first meets it")
    return found


def pass_batches(cfg: RunConfig, planned: PlannedPass, prompts: list[str] | None = None):
    """The finished rows of one variant's pass (its own model and sampling), as Ray Data hands them over: one
    execution per segment of `compute.segment_pairs` pairs, its actors released before the next starts."""
    variant_cfg = cfg.for_variant(planned.variant)
    for segment in planned.segments(cfg.compute.segment_pairs):
        dataset = build_dataset(variant_cfg, planning.pair_stream(cfg, segment), prompts)
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
        del dataset
        release_actors()


# What Ray raises for a block whose worker process died on every attempt (an actor, a task, or their node).
WORKER_DEATHS = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                 ray.exceptions.OutOfMemoryError)


def _run_pass(cfg: RunConfig, planned: PlannedPass, writer: record.MetadataWriter, progress: Progress,
              prompts: list[str] | None) -> float:
    """One variant's pass: its rows written as they come, then `worker_lost` rows for its pairs that got none.
    Returns the pass's GPU seconds."""
    if cfg.variants:
        log.info("variant %s: %d pairs to compute", planned.variant, planned.pairs)
    gpu_s, received, stopped = 0.0, 0, None
    try:
        for batch in pass_batches(cfg, planned, prompts):
            writer.add(batch)
            received += batch.num_rows
            gpu_s += pc.sum(batch.column("inference_s")).as_py() or 0.0
            line = progress.update(batch.column("status").to_pylist())
            if line:
                log.info(line)
    except Exception as exc:
        writer.flush()  # keep what finished: a rerun computes only the rest
        if not isinstance(exc, WORKER_DEATHS):
            raise
        stopped = _run_stopped(cfg, exc)  # raised below: Ray Data has logged the cause with its traceback
    release_actors()  # only now: a caught exception's traceback referenced them
    if stopped is not None:
        raise stopped
    writer.flush()
    if received < planned.pairs:  # pairs of blocks Ray Data dropped have no row: read back only then
        recorded = record.recorded_key_set(cfg)
        lost = 0
        for missing in planning.unrecorded(cfg, planned, recorded):
            writer.add(worker_lost_rows(cfg, missing))
            progress.update(["failed"] * missing.num_rows)
            lost += missing.num_rows
        writer.flush()
        log.warning("%d pairs got no result (their worker died %d times): recorded as %s",
                    lost, cfg.compute.max_task_retries + 1, WORKER_LOST)
    return gpu_s


def worker_lost_rows(cfg: RunConfig, pairs: pa.Table) -> pa.Table:
    """The `failed` rows of pairs that a finished Ray Data pass returned nothing for, with reason `worker_lost`.

    Ray Data drops a block (up to BLOCK_ROWS pairs) when the worker process computing it died on every attempt
    (`compute.max_task_retries` + 1), typically because one of its pairs crashes the model or exhausts memory. Which
    pair did it is unknown, so every pair of the block gets this row; `retry_failed: true` computes them again. An
    exception escaping a stage (a bug: the stages turn every per-pair failure into a row) also drops its block, and
    lands here too; the job log then holds its traceback.
    """
    retries = cfg.compute.max_task_retries
    message = (f"no result: the worker process computing this pair's block (up to {BLOCK_ROWS} pairs) died "
               f"{retries + 1} times (compute.max_task_retries={retries}), e.g. a crash or an out-of-memory kill on "
               "this pair or another of the block; rerun the run id with retry_failed: true to compute it again")
    rows = [metadata_row(cfg.for_variant(pair["variant"]), pair, status="failed", error_reason=WORKER_LOST,
                         error_message=message) for pair in pairs.to_pylist()]
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _run_stopped(cfg: RunConfig, exc: BaseException) -> RunStopped:
    """More blocks than `compute.max_errored_blocks` lost their worker in one pass: a systemic failure.

    Stopping (rather than recording every pair as `worker_lost`) is the choice here because a finished run marks its
    failed pairs as done: a broken node, driver or model would turn the whole catalogue into failed rows that the
    next nightly skips. A stopped run writes no summary.json, so a rerun of the run id, or the next nightly, computes
    everything that has no row once the cause is fixed.
    """
    compute = cfg.compute
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return RunStopped(
        f"run {cfg.run_id} stopped: more than {compute.max_errored_blocks} blocks of pairs got no result, their "
        f"worker process dying {compute.max_task_retries + 1} times each (compute.max_errored_blocks, "
        "compute.max_task_retries): a systemic failure (a bad node, GPU driver or model), not one bad pair. Last: "
        f"{type(exc).__name__}: {cause}. Rows finished so far are kept and summary.json is not written; rerun the "
        "run id once the cause is fixed to compute the rest"
    )
