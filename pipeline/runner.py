"""One run from configuration to summary: validate, pair, stream through Ray Data, record.

Everything that can stop the whole job (configuration, manifests, output location, checkpoint) is checked
before the Ray Data pipeline starts, so a bad job fails fast without requesting a GPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline import record
from pipeline.config import RunConfig
from pipeline.errors import JobError
from pipeline.manifests import load_manifests
from pipeline.pairing import make_pairs
from pipeline.stages import Inference, postprocess, preprocess
from pipeline.storage import filesystem

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


def check_model_source(cfg: RunConfig) -> None:
    """A checkpoint named by path or URI must exist before any GPU is requested."""
    source = cfg.model.source
    if source in ("noop",) or "/" not in source and "://" not in source:
        return  # a named configuration; the model package rejects unknown names at load
    try:
        fs, path = filesystem(source, cfg.s3)
        found = fs.exists(path)
    except Exception as exc:  # noqa: BLE001
        raise JobError(f"model.source {source}: cannot be reached: {type(exc).__name__}: {exc}") from None
    if not found:
        raise JobError(f"model.source {source}: no checkpoint there")


def pending_pairs(cfg: RunConfig, pairs: pa.Table) -> pa.Table:
    """The pairs this attempt must compute: all, less those an earlier attempt of the run finished."""
    done = record.done_keys(cfg, retry_failed=cfg.retry_failed)
    if not done:
        return pairs
    keys = pc.binary_join_element_wise(
        pairs.column("product_id"), pairs.column("scene_id"), pairs.column("variant"), "\x1f"
    )
    done_set = pa.array(["\x1f".join(k) for k in done], pa.string())
    return pairs.filter(pc.invert(pc.is_in(keys, value_set=done_set)))


def build_dataset(cfg: RunConfig, pairs: pa.Table) -> ray.data.Dataset:
    blocks = [pairs.slice(i, BLOCK_ROWS) for i in range(0, pairs.num_rows, BLOCK_ROWS)]
    compute = cfg.compute
    return (
        ray.data.from_arrow(blocks)
        .map(preprocess, fn_kwargs={"cfg": cfg}, num_cpus=compute.cpus_per_task)
        .map_batches(
            Inference,
            fn_constructor_kwargs={"cfg": cfg},
            batch_size=compute.batch_size,
            batch_format="numpy",
            num_gpus=compute.gpus_per_actor,
            num_cpus=compute.cpus_per_actor,
            concurrency=(compute.gpu_actors_min, compute.gpu_actors_max),
        )
        .map(postprocess, fn_kwargs={"cfg": cfg}, num_cpus=compute.cpus_per_task)
    )


def run(cfg: RunConfig) -> RunResult:
    """Run (or resume) `cfg.run_id`; returns the summary that was written last to the run folder."""
    started = time.monotonic()
    manifests = load_manifests(cfg.catalogue_uri, cfg.scenes_uri, cfg.pairs_uri, cfg.s3)
    pairs = make_pairs(manifests, cfg.pairing, cfg.sampling.seed)
    check_model_source(cfg)
    check_output_writable(cfg)
    record.clear_summary(cfg)
    todo = pending_pairs(cfg, pairs)
    log.info("run %s: %d pairs, %d already done, %d to compute; output %s",
             cfg.run_id, pairs.num_rows, pairs.num_rows - todo.num_rows, todo.num_rows, cfg.run_uri)

    gpu_s = 0.0
    if todo.num_rows:
        if not ray.is_initialized():
            ray.init()
        writer = record.MetadataWriter(cfg)
        progress = record.Progress(total=todo.num_rows, interval_s=cfg.progress_interval_s)
        for batch in build_dataset(cfg, todo).iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.add(batch)
            gpu_s += pc.sum(batch.column("inference_s")).as_py() or 0.0
            line = progress.update(batch.column("status").to_pylist())
            if line:
                log.info(line)
        writer.flush()
        log.info(progress.line())

    table = record.read_metadata(cfg)
    summary = record.build_summary(cfg, table, attempt_pairs=todo.num_rows, wall_s=time.monotonic() - started,
                                   gpu_s=gpu_s)
    record.write_summary(cfg, summary)
    return RunResult(summary=summary, run_uri=cfg.run_uri)
