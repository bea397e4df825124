"""The `train` part: one training worker's optimizer steps per second, in samples/s, and its peak memory.

One `Learner` (the code each Ray Train worker runs) on synthetic batches of the configured size: the figure is the
model's cost per sample (forward, backward, AdamW) without data loading, which Ray Data overlaps with it. Peak memory
is the GPU's allocator peak on CUDA, the process's peak RSS on CPU.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pipeline.model import load_dtc
from pipeline.train.config import TrainConfig
from pipeline.train.learner import Learner
from pipeline.train.parts import resolve_trainable
from pipeline.train.step import Batch


@dataclass(frozen=True)
class TrainPlan:
    source: str = "tiny"
    resolution: int = 256
    batch_size: int = 4
    steps: int = 10  # timed steps, after 2 warm-up steps
    trainable: str = "paper"
    gradient_checkpointing: bool = False

    @classmethod
    def default(cls, device: torch.device, quick: bool = False) -> TrainPlan:
        if quick:
            return cls(resolution=64, batch_size=2, steps=2)
        if device.type == "cuda":
            return cls(source="sd15", resolution=512, batch_size=4, steps=20, gradient_checkpointing=True)
        return cls()


def synthetic_batch(size: int, resolution: int, reference_size: int, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, resolution, resolution), np.uint8)
    mask[:, resolution // 4 : 3 * resolution // 4, resolution // 4 : 3 * resolution // 4] = 1
    return Batch(
        ok=torch.ones(size, dtype=torch.bool),
        reason=torch.zeros(size, dtype=torch.int64),
        scene=torch.from_numpy(rng.integers(0, 256, (size, resolution, resolution, 3), dtype=np.uint8)),
        mask=torch.from_numpy(mask),
        hint=torch.from_numpy(rng.integers(0, 256, (size, resolution, resolution, 3), dtype=np.uint8)),
        reference=torch.from_numpy(rng.integers(0, 256, (size, reference_size, reference_size, 3), dtype=np.uint8)),
        timestep_draw=torch.from_numpy(rng.uniform(size=size)),
        noise_seed=torch.arange(size, dtype=torch.int64) + seed,
        drop_reference=torch.from_numpy(rng.uniform(size=size) < 0.2),
    )


def bench_train(plan: TrainPlan, *, cpu_threads: int = 1) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads)
    cfg = TrainConfig.model_validate({
        "run_id": "bench", "manifest_uri": "unused.parquet", "output_uri": "unused",
        "model": {"source": plan.source, "gradient_checkpointing": plan.gradient_checkpointing},
        "data": {"resolution": plan.resolution}, "train": {"batch_size": plan.batch_size},
        "optim": {"warmup_steps": 0},
    })
    dtc = load_dtc(plan.source, device=device, dtype=torch.float32)
    learner = Learner(dtc, cfg, parts=resolve_trainable(plan.trainable), device=device)
    batch = synthetic_batch(plan.batch_size, plan.resolution, cfg.data.reference_size)
    for _ in range(2):
        learner.step([batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    losses = [learner.step([batch]).loss for _ in range(plan.steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    trained = sum(p.numel() for p in dtc.parameters() if p.requires_grad)
    return {
        **asdict(plan),
        "device": str(device),
        "autocast": "bf16" if device.type == "cuda" else "fp32",
        "samples_per_s": round(plan.steps * plan.batch_size / seconds, 3),
        "seconds_per_step": round(seconds / plan.steps, 4),
        "peak_memory_gib": round(peak, 3),
        "peak_memory_kind": "gpu allocator peak" if device.type == "cuda" else "process peak RSS",
        "trained_parameters": trained,
        "finite_losses": all(np.isfinite(losses)),
    }
