"""The Ray Data graph of one pass: pairs -> prepare (CPU tasks) -> inference (one actor per GPU) -> composite (CPU
tasks) -> finished metadata rows. Each stage states the resources it needs; Ray Data schedules, retries and applies
backpressure."""

from __future__ import annotations

import ray

from pipeline.inference.block_stats import bound_block_stats
from pipeline.inference.config import RunConfig
from pipeline.inference.ray_runtime import retry_arguments
from pipeline.inference.stages import Inference, composite_row, prepare_row

BLOCK_ROWS = 16  # pairs per input block: small blocks keep CPU stages parallel and memory per task low


def build_dataset(cfg: RunConfig, pairs: ray.data.Dataset, prompts: list[str] | None = None) -> ray.data.Dataset:
    """The three stages over a stream of pairs, in blocks of BLOCK_ROWS pairs (the unit a lost worker loses).
    `prompts`: the pass's prompts when known up front (see `stages.Inference`)."""
    compute = cfg.compute
    # Work whose worker process died is retried a bounded number of times (Ray Data's defaults retry it forever, so a
    # pair that crashes its worker would loop): the actors still restart without limit (Ray Data's default: a lost
    # spot node must not fail a nightly), but each batch and each CPU block gets compute.max_task_retries more tries.
    retries = compute.max_task_retries
    with retry_arguments():
        dataset = (
            pairs.repartition(target_num_rows_per_block=BLOCK_ROWS)
            .map(prepare_row, fn_kwargs={"cfg": cfg}, num_cpus=compute.cpus_per_task, max_retries=retries)
            .map_batches(
                Inference,
                fn_constructor_kwargs={"cfg": cfg, "prompts": prompts},
                batch_size=compute.batch_size,
                batch_format="numpy",
                num_gpus=compute.gpus_per_actor,
                num_cpus=compute.cpus_per_actor,
                compute=ray.data.ActorPoolStrategy(min_size=compute.gpu_actors_min, max_size=compute.gpu_actors_max),
                max_task_retries=retries,
            )
            .map(composite_row, fn_kwargs={"cfg": cfg}, num_cpus=compute.cpus_per_task, max_retries=retries)
        )
    # A block still failing after its retries is dropped, not the pass: the runner writes its pairs' `worker_lost`
    # rows. More than max_errored_blocks of them stop the pass. The setting is this dataset's own context.
    dataset.context.max_errored_blocks = compute.max_errored_blocks
    # Bounded in flight: without a limit Ray Data budgets by a share of the object store, which holds millions of
    # small pairs. (The CPUs each stage needs to make progress at all: `ray_runtime.stage_cpus`.)
    limits = dataset.context.execution_options.resource_limits
    dataset.context.execution_options.resource_limits = limits.copy(object_store_memory=compute.in_flight_mib << 20)
    bound_block_stats(dataset)  # the driver's memory stays flat over a pass of any length
    return dataset
