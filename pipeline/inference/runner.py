"""One run from configuration to summary: validate, pair, stream through Ray Data, record.

Everything that can stop the whole job (configuration, manifests, output location, checkpoint) is checked
before the Ray Data pipeline starts, so a bad job fails fast without requesting a GPU.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.core.errors import WORKER_LOST, JobError, RunStopped
from pipeline.core.model_sources import MODEL_NAMES, PICKLE_SUFFIXES, checkpoint_location
from pipeline.core.provenance import hint_branch_trained, read_provenance
from pipeline.core.storage import filesystem, storage_options
from pipeline.inference import planning, record, selection
from pipeline.inference.allocator import bound_allocators
from pipeline.inference.block_stats import bound_block_stats
from pipeline.inference.config import ComputeConfig, RunConfig
from pipeline.inference.manifests import load_manifests
from pipeline.inference.metadata_row import ROW_SCHEMA, metadata_row
from pipeline.inference.planning import PlannedPass
from pipeline.inference.stages import Inference, composite_row, prepare_row

log = logging.getLogger(__name__)

BLOCK_ROWS = 16  # pairs per input block: small blocks keep CPU stages parallel and memory per task low


@dataclass(frozen=True)
class RunResult:
    summary: dict
    run_uri: str


def check_output_writable(cfg: RunConfig) -> None:
    """Write config.json now: an unreachable bucket or a missing permission stops the job here, not mid-run."""
    try:
        record.write_config(cfg)
    except Exception as exc:  # noqa: BLE001 - any storage failure here is a job error with its cause
        raise JobError(f"cannot write to output {cfg.run_uri}: {type(exc).__name__}: {exc}") from None


def _refuse_pickle(source: str, found: str) -> JobError:
    return JobError(
        f"model.source {source}: {found} is a pickle-format checkpoint, refused (tryall never unpickles files); "
        "convert it to safetensors, e.g. save_pretrained(..., safe_serialization=True)"
    )


def check_model_source(cfg: RunConfig) -> None:
    """A checkpoint named by path or URI must exist and hold safetensors weights before any GPU is requested.

    Pickle-format files (.bin, .ckpt, ...) are refused here as the model package would refuse them in the
    inference actor: a job error now, not a failed actor after the GPUs were requested.
    """
    source = checkpoint_location(cfg.model.source)  # a packaged model's files are checked like any checkpoint's
    if source.rstrip("/").lower().endswith(PICKLE_SUFFIXES):
        raise _refuse_pickle(source, source)
    if source in MODEL_NAMES:
        return
    try:
        fs, path = filesystem(source, cfg.s3)
        found = fs.exists(path)
        is_dir = found and fs.isdir(path)
        files = [str(f) for f in fs.find(path)] if is_dir else []
    except Exception as exc:  # noqa: BLE001
        raise JobError(f"model.source {source}: cannot be reached: {type(exc).__name__}: {exc}") from None
    if not found:
        named = "" if "/" in source or "://" in source else f" and it is not a model name ({', '.join(MODEL_NAMES)})"
        raise JobError(f"model.source {source}: no checkpoint there{named}")
    if is_dir and not any(f.endswith(".safetensors") for f in files):
        pickles = sorted(f for f in files if f.lower().endswith(PICKLE_SUFFIXES))
        if pickles:
            raise _refuse_pickle(source, pickles[0])
        raise JobError(f"model.source {source}: no safetensors weights under it (is it a checkpoint directory?)")


def model_records(cfg: RunConfig) -> dict[str, dict]:
    """Per variant: the model source, which of its parts were trained and whether its hint branch was, from dtc.json.

    A model whose hint branch was never trained is its base network (Paint-by-Example, or random weights), not DTC:
    the summary says so, and so does the log before the run starts.
    """
    records = {}
    for name in cfg.variant_names():
        source = cfg.for_variant(name).model.source
        provenance = read_provenance(source, storage_options(source, cfg.s3))
        trained = hint_branch_trained(provenance)
        if not trained:
            log.warning("variant %s: model %s has an untrained hint branch (zero FiLM): it is its base network, "
                        "not a trained DTC", name, source)
        # provenance None: a named model (seeded random weights, or noop), never trained.
        records[name] = {"source": source, "hint_branch_trained": trained, "provenance": provenance}
    return records


def build_dataset(cfg: RunConfig, pairs: ray.data.Dataset) -> ray.data.Dataset:
    """The three stages over a stream of pairs, in blocks of BLOCK_ROWS pairs (the unit a lost worker loses)."""
    compute = cfg.compute
    # Work whose worker process died is retried a bounded number of times (Ray Data's defaults retry it forever, so a
    # pair that crashes its worker would loop): the actors still restart without limit (a lost spot node must not
    # fail a nightly), but each batch and each CPU block gets compute.max_task_retries more attempts.
    retries = compute.max_task_retries
    # Passed as keyword arguments: Ray Data has no named parameters for these, and `ray_remote_args` is deprecated.
    dataset = (
        pairs.repartition(target_num_rows_per_block=BLOCK_ROWS)
        .map(prepare_row, fn_kwargs={"cfg": cfg}, num_cpus=compute.cpus_per_task, max_retries=retries)
        .map_batches(
            Inference,
            fn_constructor_kwargs={"cfg": cfg},
            batch_size=compute.batch_size,
            batch_format="numpy",
            num_gpus=compute.gpus_per_actor,
            num_cpus=compute.cpus_per_actor,
            compute=ray.data.ActorPoolStrategy(min_size=compute.gpu_actors_min, max_size=compute.gpu_actors_max),
            max_restarts=-1,
            max_task_retries=retries,
        )
        .map(composite_row, fn_kwargs={"cfg": cfg}, num_cpus=compute.cpus_per_task, max_retries=retries)
    )
    # A block still failing after its retries is dropped, not the pass: `run` writes its pairs' `worker_lost` rows.
    # More than max_errored_blocks of them stop the pass (see `run`). The setting is this dataset's own context.
    dataset.context.max_errored_blocks = compute.max_errored_blocks
    # Bounded in flight: without a limit Ray Data budgets by a share of the object store, which holds millions of
    # small pairs. (The CPUs each stage needs to make progress at all: `stage_cpus`.)
    limits = dataset.context.execution_options.resource_limits
    dataset.context.execution_options.resource_limits = limits.copy(object_store_memory=compute.in_flight_mib << 20)
    bound_block_stats(dataset)  # the driver's memory stays flat over a pass of any length
    return dataset


def stage_cpus(compute: ComputeConfig) -> float:
    """Logical CPUs for one task of every stage at once beside the inference actors: Ray Data's repartition into
    blocks (one CPU a task), a preprocess and a postprocess task, and `gpu_actors_max` actors. Below that, Ray Data
    reserves the CPUs for the upstream operators first, and the postprocess stage waits until preprocessing has read
    the whole pass: nothing is recorded until then, and every prepared pair waits in the object store."""
    return 1.0 + 2 * compute.cpus_per_task + compute.gpu_actors_max * compute.cpus_per_actor


def local_cpus(compute: ComputeConfig) -> int:
    """The logical CPUs of a Ray started on this machine: every core, and at least `stage_cpus`, so that the stages
    stream on a machine with fewer cores (they then share the cores, as processes do)."""
    return max(os.cpu_count() or 1, math.ceil(stage_cpus(compute)))


def start_local_ray(cfg: RunConfig, **init_args) -> None:
    """Start Ray for the run: connect to the cluster RAY_ADDRESS names (`ray job submit` sets it; its size is the
    cluster's), or start it on this machine with `local_cpus` logical CPUs. The allocators are bounded first, while
    the driver's Ray threads and a local Ray's processes do not exist yet (`pipeline.inference.allocator`)."""
    bound_allocators()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**init_args)
    else:
        ray.init(num_cpus=local_cpus(cfg.compute), **init_args)


def warn_if_few_cpus(cfg: RunConfig) -> None:
    """A cluster that the job connected to sizes itself: say so when it has fewer logical CPUs than `stage_cpus` now
    (an autoscaling cluster may still add nodes), since the stages then do not stream."""
    have, need = ray.cluster_resources().get("CPU", 0.0), stage_cpus(cfg.compute)
    if have < need:
        log.warning("the Ray cluster has %g logical CPUs, fewer than the %g that one task of every stage needs beside "
                    "the inference actors (runner.stage_cpus): unless it scales up, nothing is written until "
                    "preprocessing has read a whole segment; add CPU nodes or lower compute.cpus_per_task / "
                    "compute.cpus_per_actor", have, need)


def pass_batches(cfg: RunConfig, planned: PlannedPass):
    """The finished rows of one variant's pass (its own model and sampling), as Ray Data hands them over: one
    execution per segment of `compute.segment_pairs` pairs, its actors released before the next starts."""
    variant_cfg = cfg.for_variant(planned.variant)
    for segment in planned.segments(cfg.compute.segment_pairs):
        dataset = build_dataset(variant_cfg, planning.pair_stream(cfg, segment))
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
        del dataset
        release_actors()


def release_actors() -> None:
    """Let go of the finished pass's actors now. Ray Data releases them when nothing references them any more, but
    after a dropped block a reference cycle keeps the inference actor, and the GPU it holds, until Python's
    garbage collector happens to run: the next pass (variant) or job would wait for that GPU."""
    gc.collect()


# What Ray raises for a block whose worker process died on every attempt (an actor, a task, or their node).
WORKER_DEATHS = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                 ray.exceptions.OutOfMemoryError)


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


def run(cfg: RunConfig) -> RunResult:
    """Run (or resume) `cfg.run_id`; returns the summary that was written last to the run folder."""
    started = time.monotonic()
    started_at = selection.now_iso()
    manifests = load_manifests(cfg.catalogue_uri, cfg.scenes_uri, cfg.pairs_uri, cfg.s3,
                               variants=cfg.variant_names())
    for name in cfg.variant_names():
        check_model_source(cfg.for_variant(name))
    models = model_records(cfg)
    check_output_writable(cfg)
    choice = selection.choose(cfg, manifests, started_at=started_at)
    record.clear_summary(cfg)
    done = record.done_key_set(cfg, retry_failed=cfg.retry_failed)
    if not ray.is_initialized():
        start_local_ray(cfg)
    warn_if_few_cpus(cfg)
    passes = planning.write_plan(cfg, manifests, choice, done)  # CPU tasks only: no GPU is requested before this
    todo, done_pairs = sum(p.pairs for p in passes), len(done)
    del done  # 16 bytes a recorded pair: planning's, not held through the passes
    log.info("run %s: %d pairs to compute, %d already done; output %s", cfg.run_id, todo, done_pairs, cfg.run_uri)

    gpu_s = 0.0
    if todo:
        writer = record.MetadataWriter(cfg, part_rows=cfg.record.part_rows, part_seconds=cfg.record.part_seconds)
        progress = record.Progress(total=todo, interval_s=cfg.progress_interval_s)
        for planned in passes:
            if planned.pairs:
                gpu_s += _run_pass(cfg, planned, writer, progress)
        log.info(progress.line())

    tally = record.tally_rows(cfg)
    summary = record.build_summary(cfg, tally, attempt_pairs=todo, wall_s=time.monotonic() - started, gpu_s=gpu_s)
    summary.update(started_at=started_at, selection=choice.selection, variants=cfg.variant_names(),
                   by_variant=tally.by_variant(), models=models)
    record.write_summary(cfg, summary)
    planning.remove_plan(cfg)
    return RunResult(summary=summary, run_uri=cfg.run_uri)


def _run_pass(cfg: RunConfig, planned: PlannedPass, writer: record.MetadataWriter, progress: record.Progress) -> float:
    """One variant's pass: its rows written as they come, then `worker_lost` rows for its pairs that got none.
    Returns the pass's GPU seconds."""
    if cfg.variants:
        log.info("variant %s: %d pairs to compute", planned.variant, planned.pairs)
    gpu_s, received, stopped = 0.0, 0, None
    try:
        for batch in pass_batches(cfg, planned):
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
