"""Starting Ray for a run and sizing it: a local Ray on this machine, or the cluster `ray job submit` names."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator

import ray
from ray.util.annotations import RayDeprecationWarning

from pipeline.inference.allocator import bound_allocators
from pipeline.inference.config import ComputeConfig, RunConfig

log = logging.getLogger(__name__)


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
    cluster's), or start a new one on this machine with `local_cpus` logical CPUs (`address="local"`: never another
    local Ray that happens to be running). The allocators are bounded first, while the driver's Ray threads and a
    local Ray's processes do not exist yet (`allocator`)."""
    bound_allocators()
    quiet_ray_data()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**init_args)
    else:
        ray.init(address="local", num_cpus=local_cpus(cfg.compute), **init_args)


def quiet_ray_data() -> None:
    """tryall logs its own progress; Ray Data's operator tables and progress bars are for an interactive terminal or
    `--log-level DEBUG`, where they say what each operator is doing."""
    verbose = sys.stderr.isatty() or logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.enable_operator_progress_bars = verbose
    context.print_on_execution_start = verbose
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Its one line says that the bars are off, which is this function's choice, not a problem.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


@contextlib.contextmanager
def retry_arguments() -> Iterator[None]:
    """Around the Ray Data calls that bound retries (`max_retries`, `max_task_retries`): Ray 2.60 deprecates passing
    them as `ray_remote_args` but has no named parameter for them yet, so its warning is not shown for these calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=RayDeprecationWarning)
        yield


def warn_if_few_cpus(cfg: RunConfig) -> None:
    """A cluster that the job connected to sizes itself: say so when it has fewer logical CPUs than `stage_cpus` now
    (an autoscaling cluster may still add nodes), since the stages then do not stream."""
    have, need = ray.cluster_resources().get("CPU", 0.0), stage_cpus(cfg.compute)
    if have < need:
        log.warning("the Ray cluster has %g logical CPUs, fewer than the %g that one task of every stage needs beside "
                    "the inference actors (ray_runtime.stage_cpus): unless it scales up, nothing is written until "
                    "preprocessing has read a whole segment; add CPU nodes or lower compute.cpus_per_task / "
                    "compute.cpus_per_actor", have, need)


def release_actors() -> None:
    """Let go of the finished pass's actors now. Ray Data releases them when nothing references them any more, but
    after a dropped block a reference cycle keeps the inference actor, and the GPU it holds, until Python's
    garbage collector happens to run: the next pass (variant) or job would wait for that GPU."""
    gc.collect()
