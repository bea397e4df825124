"""The memory part: what a run of N pairs costs in memory and time, for N from 1k to 1M (noop model, tiny images).

Each size runs as its own driver process (`python -m benchmarks.memory`) with its own local Ray, so every
figure belongs to that run alone; its inputs are written beforehand by the parent, so the driver's memory is the
run's. The child writes its figures to `figures.json` every few seconds and stops itself after `max_seconds`: a size
too large for the machine is measured over a bounded window and reported as `partial`, with the pairs finished.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.e2e import Inputs, batch_clock, local_ray, run_config, write_inputs
from benchmarks.measure import MemorySampler, ObjectStoreSampler, run_child

SCENE_SIZE, PRODUCT_SIZE, RESOLUTION, BATCH_SIZE = (96, 72), (48, 48), 64, 4
FIGURES = "figures.json"
GRACE_S = 180.0  # a stopped child shuts its Ray down; past this the parent ends its process group


class PartWatch:
    """When each metadata part first appears in the run folder (polled: Ray Data has no hook for the driver's
    writes, and watching the folder does not depend on how the record module writes them)."""

    def __init__(self, folder: Path, started: float, interval_s: float = 0.25) -> None:
        self.folder, self.started, self.interval_s = folder, started, interval_s
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PartWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        now = time.perf_counter()
        if self.folder.is_dir():
            for path in self.folder.glob("*.parquet"):
                self.seen.setdefault(path.name, now)

    def summary(self) -> dict[str, Any]:
        times = sorted(self.seen.values())
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        return {
            "metadata_parts": len(times),
            "first_part_after_s": round(times[0] - self.started, 2) if times else None,
            "part_interval_median_s": round(statistics.median(gaps), 2) if gaps else None,
            "part_interval_max_s": round(max(gaps), 2) if gaps else None,
        }


def _steady(arrivals: list[tuple[float, float, int]], started: float) -> dict[str, Any]:
    """Pairs finished, and the wall ms per pair from the first to the last finished batch (start-up left out)."""
    done = sum(n for _, _, n in arrivals)
    out: dict[str, Any] = {"pairs_finished": done,
                           "first_batch_after_s": round(arrivals[0][0] - started, 2) if arrivals else None}
    if len(arrivals) >= 3:
        rows = done - arrivals[0][2]
        out["steady_ms_per_pair"] = round((arrivals[-1][0] - arrivals[0][0]) / rows * 1e3, 3)
        out["steady_pairs"] = rows
    return out


class FigureWriter:
    """Writes `snapshot()` to a file every `interval_s` (atomically), so that a run stopped from outside still
    leaves its figures up to its last few seconds."""

    def __init__(self, path: Path, snapshot: Callable[[], dict[str, Any]], interval_s: float = 5.0) -> None:
        self.path, self.snapshot, self.interval_s = path, snapshot, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FigureWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write(self.snapshot())

    def write(self, figures: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(figures))
        os.replace(tmp, self.path)


def driver_timeline(memory: MemorySampler, arrivals: list[tuple[float, float, int]],
                    started: float) -> dict[str, Any]:
    """When the driver's private memory peaked and its coarse timeline, each moment as seconds after `started` and
    the pairs finished by then (0: still validating and planning, or starting the actors)."""

    times = [t for t, _, _ in arrivals]  # in the order they came
    done = list(itertools.accumulate(n for _, _, n in arrivals))

    def done_by(at: float) -> int:
        i = bisect.bisect_right(times, at)
        return done[i - 1] if i else 0

    peak_at = memory.driver_peak_at
    return {
        "driver_peak_anon_after_s": round(peak_at - started, 1) if peak_at is not None else None,
        "driver_peak_anon_pairs_done": done_by(peak_at) if peak_at is not None else None,
        "driver_anon_timeline": [[round(at - started, 1), mib, done_by(at)] for at, mib in memory.driver_timeline],
    }


def inputs_at(root: Path, n: int) -> Inputs:
    """The inputs `write_inputs(root, n, ...)` wrote."""
    return Inputs(str(root / "catalogue.parquet"), str(root / "scenes.parquet"), str(root / "pairs.parquet"), n)


def memory_child(n: int, root: Path, max_seconds: float | None) -> dict[str, Any]:
    """One run of the `n` pairs under `root/in`, measured; stopped (KeyboardInterrupt in this thread) after
    `max_seconds`. Writes root/figures.json periodically and at the end, and returns the last figures."""
    import torch

    from pipeline.inference.allocator import bound_allocators
    from pipeline.inference.ray_runtime import local_cpus
    from pipeline.inference.runner import run

    gpus = torch.cuda.device_count()
    cfg = run_config(inputs_at(root / "in", n), root / "out", f"mem-{n}", source="noop", resolution=RESOLUTION,
                     steps=1, batch_size=BATCH_SIZE, gpus=gpus)
    arrivals: list[tuple[float, float, int]] = []
    state: dict[str, Any] = {"pairs": n, "partial": False, "max_seconds": max_seconds}
    with ExitStack() as stack:
        memory = stack.enter_context(MemorySampler(0.5))
        ray_started = time.perf_counter()
        # As a run that starts its own Ray would (`ray_runtime.start_local_ray`): enough logical CPUs for every stage.
        cpus = local_cpus(cfg.compute)
        bound_allocators()
        state["ray_cpus"] = cpus
        stack.enter_context(local_ray(gpus, cpus))
        store = stack.enter_context(ObjectStoreSampler(1.0))
        started = time.perf_counter()
        state["ray_start_s"] = round(started - ray_started, 2)
        parts = stack.enter_context(PartWatch(Path(cfg.run_uri) / "metadata", started))

        def snapshot() -> dict[str, Any]:
            return {**state, "wall_s": round(time.perf_counter() - started, 2), **memory.summary(),
                    **store.summary(), **parts.summary(), **_steady(arrivals, started),
                    **driver_timeline(memory, list(arrivals), started)}

        writer = stack.enter_context(FigureWriter(root / FIGURES, snapshot))
        stack.enter_context(batch_clock(arrivals))
        # A real SIGINT: `_thread.interrupt_main` waits for Python bytecode, and the driver waits inside Ray.
        timer = threading.Timer(max_seconds, signal.raise_signal, (signal.SIGINT,)) if max_seconds else None
        try:
            if timer:
                timer.start()
            result = run(cfg)
            state.update(ok=result.summary.get("by_status", {}).get("ok"),
                         failed=result.summary.get("by_status", {}).get("failed"))
        except KeyboardInterrupt:
            state["partial"] = True
        finally:
            if timer:
                timer.cancel()
        state["stopped_after_s"] = round(time.perf_counter() - started, 2)
        parts.poll()
        figures = snapshot()
        figures["wall_s"] = state["stopped_after_s"]
        writer.write(figures)
    memory.sample()
    figures.update(memory.summary())  # the last samples, taken while Ray shut down, count too
    figures.update(driver_timeline(memory, arrivals, started))
    writer.write(figures)
    return figures


def _measure_size(n: int, root: Path, max_seconds: float | None) -> dict[str, Any]:
    write_inputs(root / "in", n, SCENE_SIZE, PRODUCT_SIZE)
    cmd = [sys.executable, "-m", "benchmarks.memory", str(n), str(root), str(max_seconds or 0)]
    rc, _, err = run_child(cmd, (max_seconds + GRACE_S) if max_seconds else None)
    figures_path = root / FIGURES
    if not figures_path.exists():
        raise RuntimeError(f"memory run of {n} pairs left no figures (rc {rc}):\n{err[-4000:]}")
    figures = json.loads(figures_path.read_text())
    if rc:
        figures["partial"] = True
        figures["child_returncode"] = rc
    return figures


RATIO_KEYS = ("driver_peak_anon_mib", "worker_peak_anon_mib", "ray_system_peak_anon_mib", "driver_peak_rss_mib",
              "worker_peak_rss_mib", "object_store_peak_used_mib", "steady_ms_per_pair")


def _ratios(run: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    return {key: round(run[key] / base[key], 3) if run.get(key) and base.get(key) else None for key in RATIO_KEYS}


def bench_memory(sizes: tuple[int, ...] = (1000, 20000), workdir: Path | None = None,
                 max_seconds: float | None = None) -> dict[str, Any]:
    """Every size's figures, and their ratios to the smallest run's; `max_seconds` bounds each run."""
    runs = []
    with ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tryall-mem-")))
        for n in sorted(sizes):
            runs.append(_measure_size(n, root / f"run-{n}", max_seconds))
    base, last = runs[0], runs[-1]
    for run in runs:
        run["ms_per_pair"] = round(run["wall_s"] / run["pairs_finished"] * 1e3, 2) if run["pairs_finished"] else None
        run["vs_smallest"] = _ratios(run, base)
    ratios = last["vs_smallest"]
    private = (ratios["driver_peak_anon_mib"], ratios["worker_peak_anon_mib"])
    return {
        "runs": runs,
        "driver_ratio": ratios["driver_peak_anon_mib"],
        "worker_ratio": ratios["worker_peak_anon_mib"],
        "within_1_5x": all(r is not None and r <= 1.5 for r in private),
        "max_seconds": max_seconds,
        "note": "one fresh driver process and local Ray per size (noop model, 96x72 JPEG scenes, 64 px crops, batches "
                "of 4). driver_ratio, worker_ratio and within_1_5x: private memory (peak RssAnon, /proc sampled every "
                "0.5 s) of the largest run over the smallest; worker = the largest single Ray worker. *_rss_*: VmHWM, "
                "which also counts the object store's shared pages a process touched. object_store_*: bytes held in "
                "the plasma stores, from the raylet's store stats (`ray memory --stats-only`), sampled every 1 s. "
                "first_part_after_s: from run(cfg) called to the first metadata part seen in metadata/ (polled every "
                "0.25 s). steady_ms_per_pair: wall ms per pair from the first to the last batch the driver received. "
                "partial: the run was stopped after max_seconds; its figures are those up to then (pairs_finished).",
    }


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m benchmarks.memory PAIRS WORKDIR MAX_SECONDS (0: no limit)")
    print(json.dumps(memory_child(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) or None)))
