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

from pipeline import record, selection
from pipeline.config import RunConfig
from pipeline.errors import JobError
from pipeline.manifests import load_manifests
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


# The suffixes pipeline.model.cache refuses (kept here so the driver need not import torch to check a source).
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
# Sources that name a model rather than a checkpoint: the stages' no-op model and `pipeline.model.NAMED_CONFIGS`
# (random weights; listed here for the same reason, and a test keeps the two equal).
MODEL_NAMES = ("noop", "tiny", "sd15")


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
    source = cfg.model.source
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


def pending_pairs(cfg: RunConfig, pairs: pa.Table) -> pa.Table:
    """The pairs this attempt must compute: all, less those an earlier attempt of the run finished."""
    done = record.done_keys(cfg, retry_failed=cfg.retry_failed)
    if not done:
        return pairs
    keys = _pair_keys(pairs.column("product_id"), pairs.column("scene_id"), pairs.column("variant"))
    done_set = _pair_keys(*(pa.array(list(c), pa.string()) for c in zip(*done, strict=True)))
    return pairs.filter(pc.invert(pc.is_in(keys, value_set=done_set)))


def _pair_keys(*columns: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """One string per pair that no two distinct pairs share, whatever the ids hold: each id is prefixed with its
    length (`3:abc5:room1...`), so no separator character inside an id can make two pairs look alike."""
    parts = []
    for column in columns:
        parts += [pc.cast(pc.utf8_length(column), pa.string()), ":", column]
    return pc.binary_join_element_wise(*parts, "")


def order_by_scene(pairs: pa.Table) -> pa.Table:
    """A scene's pairs side by side, so that consecutive pairs of one task share it: the CPU stages then reuse the
    scene they prepared or decoded for the previous pair (`preprocess.SceneMemo`, `postprocess.SceneCache`)."""
    return pairs.sort_by([("scene_id", "ascending"), ("product_id", "ascending")])


def build_dataset(cfg: RunConfig, pairs: pa.Table) -> ray.data.Dataset:
    pairs = order_by_scene(pairs)
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


def variant_batches(cfg: RunConfig, todo: pa.Table):
    """The finished rows of every variant, one Ray Data pass per variant (each with its own model and sampling)."""
    for name in cfg.variant_names():
        part = todo.filter(pc.equal(todo.column("variant"), name)) if cfg.variants else todo
        if not part.num_rows:
            continue
        if cfg.variants:
            log.info("variant %s: %d pairs to compute", name, part.num_rows)
        yield from build_dataset(cfg.for_variant(name), part).iter_batches(batch_size=None, batch_format="pyarrow")


def run(cfg: RunConfig) -> RunResult:
    """Run (or resume) `cfg.run_id`; returns the summary that was written last to the run folder."""
    started = time.monotonic()
    started_at = selection.now_iso()
    manifests = load_manifests(cfg.catalogue_uri, cfg.scenes_uri, cfg.pairs_uri, cfg.s3)
    for name in cfg.variant_names():
        check_model_source(cfg.for_variant(name))
    check_output_writable(cfg)
    planned = selection.plan(cfg, manifests, started_at=started_at)
    pairs = planned.pairs
    record.clear_summary(cfg)
    todo = pending_pairs(cfg, pairs)
    log.info("run %s: %d pairs, %d already done, %d to compute; output %s",
             cfg.run_id, pairs.num_rows, pairs.num_rows - todo.num_rows, todo.num_rows, cfg.run_uri)

    gpu_s = 0.0
    if todo.num_rows:
        if not ray.is_initialized():
            ray.init()
        writer = record.MetadataWriter(cfg, part_rows=cfg.record.part_rows, part_seconds=cfg.record.part_seconds)
        progress = record.Progress(total=todo.num_rows, interval_s=cfg.progress_interval_s)
        for batch in variant_batches(cfg, todo):
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
    summary.update(started_at=started_at, selection=planned.selection, variants=cfg.variant_names(),
                   by_variant=selection.variant_counts(table))
    record.write_summary(cfg, summary)
    return RunResult(summary=summary, run_uri=cfg.run_uri)
