"""The model part: seconds per image and peak GPU memory, naive reference vs our fast path, in one process.

On a GPU: the full-size `sd15` DTC (random weights) at 512 px. Naive = `NaiveSampler` in fp32 (batch 1, DDIM 40,
guidance 5 as two passes); fast = `DTCSampler` in fp16 (batched guidance, SDPA, no host sync in the loop), same
scheduler and steps; then the fast path at other batch sizes and with DPM-Solver++ at 20 steps.
Without a GPU the same comparison runs with `tiny` on the CPU (fast = fp32, batched guidance, larger batch); the
report says so. Timing: wall clock around `generate` (CUDA synchronised), after one warm-up call per configuration;
median over `repeats` calls, divided by the batch size.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.klein_model import bench_klein
from benchmarks.naive import NaiveSampler
from pipeline.model import DTCSampler, SampleBatch, SamplingParams, load_dtc, select_device
from pipeline.model.device import DTYPES


def synthetic_batch(size: int, resolution: int, reference_size: int = 224, offset: int = 0) -> SampleBatch:
    """Random crops with a centred square region, a collage in it, random references; seeds 100 + i."""
    scenes, masks, hints, refs = [], [], [], []
    for i in range(offset, offset + size):
        rng = np.random.default_rng(1000 + i)
        scenes.append(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8))
        mask = np.zeros((resolution, resolution), bool)
        lo, hi = resolution // 4, 3 * resolution // 4
        mask[lo:hi, lo:hi] = True
        masks.append(mask)
        hint = np.zeros((resolution, resolution, 3), np.uint8)
        hint[lo + 4 : hi - 4, lo + 4 : hi - 4] = rng.integers(0, 256, 3, dtype=np.uint8)
        hints.append(hint)
        refs.append(rng.integers(0, 256, (reference_size, reference_size, 3), dtype=np.uint8))
    return SampleBatch(
        scene=np.stack(scenes), mask=np.stack(masks), hint=np.stack(hints), reference=np.stack(refs),
        seeds=np.arange(100 + offset, 100 + offset + size, dtype=np.int64),
    )


@dataclass(frozen=True)
class ModelPlan:
    """What to run: the DTC size, the crop size and the fast path's batch sizes (the first is compared with naive)."""

    source: str
    resolution: int
    batch_sizes: tuple[int, ...]
    steps: int = 40
    dpm_steps: int = 20
    repeats: int = 3
    compile: bool = False

    @staticmethod
    def default(device: torch.device, quick: bool = False) -> ModelPlan:
        if device.type == "cuda":
            return ModelPlan("sd15", 512, (4, 1, 8) if not quick else (4,), repeats=3 if not quick else 1)
        if quick:
            return ModelPlan("tiny", 64, (2,), steps=4, dpm_steps=2, repeats=1)
        # 128 px keeps the CPU run short; the paper's 40 steps and guidance stay.
        return ModelPlan("tiny", 128, (4, 1, 8), repeats=3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    seconds: float  # median wall seconds per image
    cpu_seconds: float  # median process CPU seconds per image (all threads)
    peak_gib: float | None
    output: np.ndarray


def _time(generate: Any, batch: SampleBatch, device: torch.device, repeats: int) -> Timing:
    """Medians per image over `repeats` calls after one warm-up call (kernels chosen, caches filled, compile done)."""
    out = generate(batch)
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    wall, cpu = [], []
    for _ in range(repeats):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        out = generate(batch)
        _sync(device)
        wall.append((time.perf_counter() - start) / len(batch))
        cpu.append((time.process_time() - start_cpu) / len(batch))
    peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
    return Timing(statistics.median(wall), statistics.median(cpu), peak, out)


def bench_model(
    plan: ModelPlan | None = None, *, device: torch.device | None = None, cpu_threads: int = 1
) -> dict[str, Any]:
    """Naive vs fast; see the module notes. On CPU, torch runs `cpu_threads` threads (one core by default: two
    OpenMP threads on a loaded 2-core machine spin-wait on each other and measure the load, not the model), and
    the speedup is taken on CPU time; on a GPU it is taken on wall time."""
    device = select_device(device)
    plan = plan or ModelPlan.default(device)
    on_gpu = device.type == "cuda"
    threads_before = torch.get_num_threads()
    if not on_gpu:
        torch.set_num_threads(cpu_threads)
    try:
        return _bench(plan, device)
    finally:
        torch.set_num_threads(threads_before)


def _bench(plan: ModelPlan, device: torch.device) -> dict[str, Any]:
    on_gpu = device.type == "cuda"
    dtype_name = "fp16" if on_gpu else "fp32"
    fast_dtype = DTYPES[dtype_name]
    ddim = SamplingParams("ddim", plan.steps, 5.0)
    rows: list[dict[str, Any]] = []

    # Naive reference first (one image, its own fp32 model), then freed so the fast rows' memory figures are theirs.
    naive_dtc = load_dtc(plan.source, device=device, dtype=DTYPES["fp32"])
    naive = _time(NaiveSampler(naive_dtc, ddim).generate, synthetic_batch(1, plan.resolution), device, plan.repeats)
    rows.append(_row("naive", "fp32", 1, ddim, naive, naive, on_gpu))
    del naive_dtc
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()

    dtc = load_dtc(plan.source, device=device, dtype=fast_dtype)
    compared: Timing | None = None
    for params in (ddim, SamplingParams("dpmpp", plan.dpm_steps, 5.0)):
        sampler = DTCSampler(dtc, params, compile=plan.compile)
        for size in plan.batch_sizes:
            timing = _time(sampler.generate, synthetic_batch(size, plan.resolution), device, plan.repeats)
            rows.append(_row("fast", dtype_name, size, params, timing, naive, on_gpu))
            compared = compared or timing
    assert compared is not None
    diff = np.abs(naive.output[0].astype(int) - compared.output[0].astype(int))
    basis = "wall" if on_gpu else "cpu"
    return {
        "device": "cuda" if on_gpu else "cpu",
        "note": None if on_gpu else (
            "no GPU on this machine: the comparison runs the `tiny` DTC on the CPU (fast path = fp32, batched "
            "guidance, larger batch); the sd15 512 px figures need a GPU and are not measured here"
        ),
        "config": plan.source,
        "resolution": plan.resolution,
        "guidance": 5.0,
        "speedup": rows[1]["speedup_vs_naive"],
        "speedup_compares": (
            f"naive fp32 batch 1 vs fast {dtype_name} batch {plan.batch_sizes[0]}, both DDIM {plan.steps} steps, "
            f"on {'wall time (CUDA synchronised)' if on_gpu else 'process CPU time'}"
        ),
        "speedup_basis": basis,
        "naive_vs_fast_max_pixel_diff": int(diff.max()),
        "naive_vs_fast_mean_pixel_diff": round(float(diff.mean()), 4),
        "rows": rows,
        "repeats": plan.repeats,
        "torch_threads": torch.get_num_threads(),
        "compile": plan.compile,
        # FLUX.2 [klein] beside the DTC, at the same crop and the first batch size (its own 4 distilled steps).
        "klein": bench_klein(device, plan.resolution, plan.batch_sizes[:1], plan.repeats),
    }


def _row(path: str, dtype: str, batch: int, params: SamplingParams, timing: Timing, naive: Timing,
         on_gpu: bool) -> dict[str, Any]:
    speedup = naive.seconds / timing.seconds if on_gpu else naive.cpu_seconds / timing.cpu_seconds
    return {
        "path": path,
        "dtype": dtype,
        "batch": batch,
        "scheduler": params.scheduler,
        "steps": params.steps,
        "seconds_per_image": round(timing.seconds, 4),
        "cpu_seconds_per_image": round(timing.cpu_seconds, 4),
        "peak_gpu_gib": timing.peak_gib,
        "speedup_vs_naive": round(speedup, 2),
    }
