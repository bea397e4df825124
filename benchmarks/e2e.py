"""The pipeline and memory parts: whole Ray runs (`pipeline.inference.runner.run`) on generated inputs.

- efficiency: model-only seconds per pair / end-to-end seconds per pair, same pairs, same device, same model and
  sampling, and the model alone given what the inference actor is given (on CPU: `cpus_per_actor` threads).
  Steady state: after a warm-up run, every run is done with N and with 2N pairs on the same warm Ray, and the
  per-pair figure is the difference of their steady windows over their difference in pairs (`steady_figures`), so
  start-up (Ray Data planning, actor and worker creation, model load) and the work done ahead cancel out.
  `actor_busy_fraction` is the model actor's time inside its batches over the run's wall time (start-up included):
  how busy the GPU would be kept.
- overhead: the same with the `noop` model (returns the scene crop) on tiny images: what a pair costs the framework
  (Ray Data tasks and transfers, the driver's metadata writing, the CPU stages on tiny images), in wall milliseconds
  per pair on this machine, and in CPU core-milliseconds of every process of the run (driver, raylet, workers).

The memory part (`benchmarks.memory`) and the cluster part (`benchmarks.cluster`) use this module's inputs,
configs and batch clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from benchmarks.measure import CpuSampler
from pipeline.inference.config import RunConfig
from pipeline.synthetic.images import PHONE, encode, photo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    catalogue_uri: str
    scenes_uri: str
    pairs_uri: str
    pairs: int


def write_inputs(root: Path, n_pairs: int, scene_size: tuple[int, int], product_size: tuple[int, int],
                 unique: int = 4) -> Inputs:
    """n_pairs distinct (product, scene) pairs over `unique` distinct scene and product images (ids differ, files
    repeat); regions are boxes (half) and PNG masks (half) around the scene's centre."""
    root.mkdir(parents=True, exist_ok=True)
    width, height = scene_size
    box = (width // 4, height // 3, 3 * width // 4, 5 * height // 6)
    scene_files, mask_files, product_files = [], [], []
    for i in range(unique):
        scene_files.append(root / f"scene-{i}.jpg")
        scene = photo(width, height, seed=i, scales=PHONE, grain=2.0)
        scene_files[-1].write_bytes(encode(scene, "JPEG", quality=90))
        product_files.append(root / f"product-{i}.jpg")
        product = photo(*product_size, seed=100 + i, scales=PHONE, grain=4.0)
        product_files[-1].write_bytes(encode(product, "JPEG", quality=90))
    mask = np.zeros((height, width), np.uint8)
    mask[box[1] : box[3], box[0] : box[2]] = 255
    mask_files.append(root / "mask.png")
    mask_files[-1].write_bytes(encode(Image.fromarray(mask), "PNG"))
    n_scenes = max(1, min(100, n_pairs))
    n_products = -(-n_pairs // n_scenes)
    scene_ids = [f"scene-{j:05d}" for j in range(n_scenes)]
    product_ids = [f"product-{i:06d}" for i in range(n_products)]
    with_mask = [j % 2 == 1 for j in range(n_scenes)]
    pq.write_table(pa.table({
        "product_id": product_ids,
        "image_uri": [str(product_files[i % unique]) for i in range(n_products)],
        "category": ["decor"] * n_products,
    }), root / "catalogue.parquet")
    pq.write_table(pa.table({
        "scene_id": scene_ids,
        "image_uri": [str(scene_files[j % unique]) for j in range(n_scenes)],
        "mask_uri": pa.array([str(mask_files[0]) if m else None for m in with_mask], pa.string()),
        **{name: pa.array([None if m else v for m in with_mask], pa.int32())
           for name, v in zip(("x0", "y0", "x1", "y1"), box, strict=True)},
        "category": ["decor"] * n_scenes,
    }), root / "scenes.parquet")
    k = np.arange(n_pairs)
    pq.write_table(pa.table({
        "product_id": [product_ids[i] for i in k // n_scenes],
        "scene_id": [scene_ids[j] for j in k % n_scenes],
    }), root / "pairs.parquet")
    return Inputs(str(root / "catalogue.parquet"), str(root / "scenes.parquet"), str(root / "pairs.parquet"), n_pairs)


def run_config(inputs: Inputs, output_root: Path, run_id: str, *, source: str, resolution: int, steps: int,
               batch_size: int, gpus: int, output_format: str = "jpeg") -> RunConfig:
    return RunConfig.model_validate({
        "run_id": run_id,
        "catalogue_uri": inputs.catalogue_uri,
        "scenes_uri": inputs.scenes_uri,
        "pairs_uri": inputs.pairs_uri,
        "output_uri": str(output_root),
        "model": {"source": source},
        "sampling": {"steps": steps, "resolution": resolution},
        "output": {"format": output_format},
        # One actor per GPU, as on a cluster. Without CUDA, Ray gets one fake GPU (`local_ray`), as in the
        # integration tests: the actor keeps the cluster's shape (its own CPU, not fused with the CPU stages) and
        # its model runs on the CPU.
        "compute": {"batch_size": batch_size, "gpus_per_actor": 1.0,
                    "gpu_actors_min": max(1, gpus), "gpu_actors_max": max(1, gpus)},
        "progress_interval_s": 3600,
    })


@contextlib.contextmanager
def local_ray(num_gpus: int, num_cpus: int | None = None) -> Iterator[None]:
    """A local Ray for the bench's runs (`num_cpus` logical CPUs, default every core; the real GPUs, or one fake GPU
    resource without CUDA so the inference actor is placed as on a cluster), progress bars off; shut down after."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=max(1, num_gpus), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def batch_clock(arrivals: list[tuple[float, float, int]], cpu: CpuSampler | None = None) -> Iterator[None]:
    """Record (wall time, CPU seconds so far or 0.0 without `cpu`, rows) each time the runner hands a finished batch
    to its metadata writer. Instrumentation for the measurement only: the writer's behaviour is unchanged. Without
    `cpu` no /proc scan is made per batch, so long runs are not slowed by the clock."""
    from pipeline.inference import record

    original = record.MetadataWriter.add

    def add(self: Any, rows: Any) -> None:
        arrivals.append((time.perf_counter(), cpu.now() if cpu else 0.0, rows.num_rows))
        original(self, rows)

    record.MetadataWriter.add = add  # type: ignore[method-assign]
    try:
        yield
    finally:
        record.MetadataWriter.add = original  # type: ignore[method-assign]


def timed_run(cfg: RunConfig) -> dict[str, Any]:
    """One run; whole-run figures, and steady-state ones from the first to the last finished batch."""
    from pipeline.inference.runner import run

    arrivals: list[tuple[float, float, int]] = []
    with CpuSampler() as cpu, batch_clock(arrivals, cpu):
        start = time.perf_counter()
        result = run(cfg)
        wall = time.perf_counter() - start
    by_status = result.summary.get("by_status", {})
    busy = _actor_busy_seconds(cfg)
    out: dict[str, Any] = {
        "pairs": result.summary.get("pairs"), "ok": by_status.get("ok"), "failed": by_status.get("failed"),
        "by_error_reason": result.summary.get("by_error_reason"), "wall_s": round(wall, 3),
        "core_s": round(cpu.seconds, 3), "batches_seen": len(arrivals),
        "actor_busy_s": busy, "actor_busy_fraction": round(busy / wall, 3) if busy is not None else None,
    }
    if len(arrivals) >= 3:
        rows = sum(n for _, _, n in arrivals[1:])
        window_s, window_core_s = arrivals[-1][0] - arrivals[0][0], arrivals[-1][1] - arrivals[0][1]
        out.update(window_s=round(window_s, 3), window_core_s=round(window_core_s, 3), window_pairs=rows)
        out["steady_seconds_per_pair"] = round(window_s / rows, 5)
        out["steady_core_seconds_per_pair"] = round(window_core_s / rows, 5)
        out["steady_basis"] = f"first to last of {len(arrivals)} finished batches ({rows} pairs)"
        out["first_batch_after_s"] = round(arrivals[0][0] - start, 3)
    elif out["pairs"]:
        # Too few batches to leave start-up out (test-sized runs): the whole run, start-up included.
        out["steady_seconds_per_pair"] = round(wall / out["pairs"], 5)
        out["steady_core_seconds_per_pair"] = round(cpu.seconds / out["pairs"], 5)
        out["steady_basis"] = f"whole run, start-up included (only {len(arrivals)} batches)"
    return out


def _actor_busy_seconds(cfg: RunConfig) -> float | None:
    """Sum over the run's rows of `inference_s` (each batch's time in the actor, shared by its pairs)."""
    from pipeline.inference import record

    try:
        table = record.read_metadata(cfg)
    except Exception:  # noqa: BLE001 - a figure for the report, not part of the run
        return None
    if "inference_s" not in table.column_names:
        return None
    return round(float(np.nansum(table.column("inference_s").to_numpy(zero_copy_only=False))), 3)


def differenced(cfg_warm: RunConfig, cfg_n: RunConfig, cfg_2n: RunConfig, n: int) -> dict[str, Any]:
    """A small warm-up run (discarded: the first run on a fresh Ray also pays for starting its worker processes and
    first imports), then runs of N and 2N pairs; per-pair wall and core seconds from their difference."""
    warm = timed_run(cfg_warm)
    small, large = timed_run(cfg_n), timed_run(cfg_2n)
    return {"runs": [small, large], "warm_up_run": warm, **steady_figures(small, large, n)}


def steady_figures(small: dict[str, Any], large: dict[str, Any], n: int) -> dict[str, Any]:
    """Per-pair figures from runs of N and 2N pairs.

    Preferred: the difference of the two runs' steady windows (first to last finished batch at the driver). Taking
    the window leaves start-up out, whose length varies from run to run on a loaded machine; taking the
    difference of two windows cancels the work done ahead of the first finished batch (the actor computes while the
    first postprocess task starts), which is the same in both. Fallbacks: whole-run difference, then the 2N run.
    """
    basis = None
    if "window_s" in small and "window_s" in large and large["window_pairs"] > small["window_pairs"]:
        pairs = large["window_pairs"] - small["window_pairs"]
        wall = (large["window_s"] - small["window_s"]) / pairs
        core = (large["window_core_s"] - small["window_core_s"]) / pairs
        basis = f"difference of the steady windows (first to last finished batch) of runs of N and 2N, N = {n}"
    if basis is None or wall <= 0 or core <= 0:
        wall, core = (large["wall_s"] - small["wall_s"]) / n, (large["core_s"] - small["core_s"]) / n
        basis = f"(T(2N) - T(N)) / N, N = {n}"
    if wall <= 0 or core <= 0:  # noise larger than N pairs' work (test-sized runs): the 2N run, start-up included
        wall, core = large["wall_s"] / (2 * n), large["core_s"] / (2 * n)
        basis = f"whole run of 2N = {2 * n} pairs, start-up included (N too small to difference)"
    out = {"seconds_per_pair": round(wall, 5), "core_seconds_per_pair": round(core, 5), "basis": basis}
    if small.get("actor_busy_s") is not None and large.get("actor_busy_s") is not None:
        # The model's own time per pair inside the pipeline (it shares the CPU with the CPU stages without a GPU).
        out["actor_busy_seconds_per_pair"] = round((large["actor_busy_s"] - small["actor_busy_s"]) / n, 5)
    return out


def single(cfg: RunConfig) -> dict[str, Any]:
    """One run; per-pair figures of the whole run, start-up included (test-sized runs)."""
    run = timed_run(cfg)
    n = max(1, run["pairs"] or 0)
    return {"runs": [run], "seconds_per_pair": round(run["wall_s"] / n, 5),
            "core_seconds_per_pair": round(run["core_s"] / n, 5),
            "basis": f"whole run of {n} pairs, start-up included"}


@dataclass(frozen=True)
class PipelinePlan:
    pairs: int = 96  # N: the model runs do N and 2N pairs
    scene_size: tuple[int, int] = (640, 480)
    product_size: tuple[int, int] = (320, 320)
    resolution: int = 128
    steps: int = 20
    batch_size: int = 4
    source: str = "tiny"
    overhead_pairs: int = 1000  # N of the noop runs
    overhead_scene_size: tuple[int, int] = (96, 72)
    overhead_resolution: int = 64
    single_runs: bool = False  # test-sized: one run of N each, start-up included (no warm-up, no differencing)


def model_only_seconds_per_pair(inputs: Inputs, plan: PipelinePlan, threads: int, repeats: int = 3) -> dict[str, Any]:
    """The model alone on the pipeline's own crops (prepare_pair of the same files), in batches of batch_size."""
    import torch

    from pipeline.imaging.settings import ImageSettings
    from pipeline.inference.preprocess import prepare_pair
    from pipeline.model import DTCSampler, SampleBatch, SamplingParams, load_dtc

    scenes = pq.read_table(inputs.scenes_uri).to_pylist()
    products = pq.read_table(inputs.catalogue_uri).to_pylist()
    settings = ImageSettings(resolution=plan.resolution)
    prepared = []
    for i in range(plan.batch_size):
        scene, product = scenes[i % len(scenes)], products[i % len(products)]
        box = None if scene["mask_uri"] else tuple(scene[k] for k in ("x0", "y0", "x1", "y1"))
        mask = Path(scene["mask_uri"]).read_bytes() if scene["mask_uri"] else None
        prepared.append(prepare_pair(Path(scene["image_uri"]).read_bytes(), Path(product["image_uri"]).read_bytes(),
                                     mask_bytes=mask, box=box, settings=settings))
    batch = SampleBatch(
        scene=np.stack([p.scene_crop for p in prepared]), mask=np.stack([p.mask_crop for p in prepared]),
        hint=np.stack([p.hint for p in prepared]), reference=np.stack([p.reference for p in prepared]),
        seeds=np.arange(len(prepared), dtype=np.int64),
    )
    on_gpu = torch.cuda.is_available()
    before = torch.get_num_threads()
    if not on_gpu:
        torch.set_num_threads(threads)
    try:
        sampler = DTCSampler(load_dtc(plan.source), SamplingParams("ddim", plan.steps, 5.0))
        sampler.generate(batch)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            sampler.generate(batch)
            if on_gpu:
                torch.cuda.synchronize()
            samples.append((time.perf_counter() - start) / len(batch))
    finally:
        torch.set_num_threads(before)
    return {"seconds_per_pair": round(statistics.median(samples), 5), "torch_threads": threads if not on_gpu else None,
            "batch_size": plan.batch_size}


def bench_pipeline(plan: PipelinePlan | None = None, workdir: Path | None = None) -> dict[str, Any]:
    import torch

    plan = plan or PipelinePlan()
    gpus = torch.cuda.device_count()
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tryall-bench-")))
        model_cfgs, noop_cfgs = [], []
        warm_pairs = 2 * plan.batch_size
        for name, model_n, noop_n in (("warm", warm_pairs, warm_pairs), ("1n", plan.pairs, plan.overhead_pairs),
                                      ("2n", 2 * plan.pairs, 2 * plan.overhead_pairs)):
            inputs = write_inputs(root / f"in-{name}", model_n, plan.scene_size, plan.product_size)
            model_cfgs.append(run_config(inputs, root / "out", f"model-{name}", source=plan.source,
                                         resolution=plan.resolution, steps=plan.steps, batch_size=plan.batch_size,
                                         gpus=gpus))
            noop_inputs = write_inputs(root / f"noop-{name}", noop_n, plan.overhead_scene_size, (48, 48))
            noop_cfgs.append(run_config(noop_inputs, root / "out", f"noop-{name}", source="noop",
                                        resolution=plan.overhead_resolution, steps=plan.steps,
                                        batch_size=plan.batch_size, gpus=gpus))
        with local_ray(gpus):
            if plan.single_runs:
                e2e, noop = single(model_cfgs[1]), single(noop_cfgs[1])
            else:
                e2e = differenced(*model_cfgs, plan.pairs)
                noop = differenced(*noop_cfgs, plan.overhead_pairs)
        threads = max(1, int(model_cfgs[0].compute.cpus_per_actor))
        alone = model_only_seconds_per_pair(inputs, plan, threads)
    e2e_s = e2e["seconds_per_pair"]
    efficiency = alone["seconds_per_pair"] / e2e_s if e2e_s > 0 else None
    busy = e2e.get("actor_busy_seconds_per_pair")
    return {
        "efficiency": round(efficiency, 3) if efficiency is not None else None,
        "overhead_ms_per_pair": _ms(noop["seconds_per_pair"]),
        "overhead_core_ms_per_pair": _ms(noop["core_seconds_per_pair"]),
        "overhead_measured_with": (
            f"the noop model (returns the scene crop), {plan.overhead_scene_size[0]}x{plan.overhead_scene_size[1]} "
            f"JPEG scenes, {plan.overhead_resolution} px crops; wall ms per pair at steady state ({noop['basis']}); "
            "core-ms counts every process of the run (driver, raylet, GCS, workers)"
        ),
        "actor_busy_fraction": e2e["runs"][-1]["actor_busy_fraction"],
        # How busy the pipeline keeps its model actor at steady state (the GPU, on a GPU node): the actor's time in
        # batches per pair / end-to-end time per pair. Unlike `efficiency` it does not depend on the model running
        # as fast inside the pipeline as alone (without a GPU it shares the CPU with the CPU stages).
        "actor_busy_steady": round(busy / e2e_s, 3) if busy and e2e_s > 0 else None,
        "actor_busy_seconds_per_pair": busy,
        "model_only_seconds_per_pair": alone["seconds_per_pair"],
        "end_to_end_seconds_per_pair": e2e_s,
        "model": {"source": plan.source, "resolution": plan.resolution, "steps": plan.steps, "scheduler": "ddim",
                  "batch_size": plan.batch_size, "device": "cuda" if gpus else "cpu",
                  "actor_torch_threads": alone["torch_threads"]},
        "inputs": f"{plan.scene_size[0]}x{plan.scene_size[1]} JPEG scenes, {plan.product_size[0]}x"
                  f"{plan.product_size[1]} products; half box, half PNG mask regions; jpeg output",
        "end_to_end": e2e,
        "noop": noop,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 2)
