"""Timing and memory helpers: medians of repeated measurements, process CPU time, peak RSS from /proc."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 2)


def cpu_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median process CPU time of `fn()` in milliseconds (core-ms: every thread of this process counts), the samples
    in seconds, and the last result. CPU time, not wall time, so other processes on the machine change it little."""
    samples, result = [], None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        samples.append(time.process_time() - start)
    return median_ms(samples), samples, result


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """The process's peak resident set size (VmHWM) in MiB, from /proc (Linux)."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else round(kib / 1024, 1)


def rss_mib(pid: int | str = "self") -> float | None:
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else round(kib / 1024, 1)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User + system CPU seconds of a process so far (utime + stime from /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_tree() -> list[int]:
    """This process and every process below it."""
    return [os.getpid(), *descendants(os.getpid())]


class _Sampler:
    """Calls `sample()` every `interval_s` on a background thread while the block runs, and once more at its end."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        raise NotImplementedError


class MemorySampler(_Sampler):
    """Samples, every `interval_s`, the peak RSS of this process and of every process below it (Ray's raylet, GCS and
    workers when this process started Ray), and the largest sum of their current RSS. VmHWM is a running peak, so a
    worker's peak is caught unless it exits between two samples after growing. For this process it also keeps when
    its private memory peaked and, every `timeline_s`, what it was then (perf_counter seconds, MiB): where in a run
    the driver's memory goes."""

    def __init__(self, interval_s: float = 0.5, timeline_s: float = 30.0) -> None:
        super().__init__(interval_s)
        self.timeline_s = timeline_s
        self.driver_timeline: list[tuple[float, float]] = []
        self.driver_peak_at: float | None = None
        self.peaks: dict[int, float] = {}
        self.anon_peaks: dict[int, float] = {}  # private memory only (RssAnon): no shared object-store pages
        self.names: dict[int, str] = {}
        self.max_total_rss_mib = 0.0

    def sample(self) -> None:
        total = 0.0
        for pid in process_tree():
            peak, now, anon = peak_rss_mib(pid), rss_mib(pid), _status_kib(pid, "RssAnon")
            if peak is None:
                continue
            name = process_name(pid)  # again each time: Ray workers retitle themselves (ray::IDLE, ray::MapWorker...)
            if name and name != "?":
                self.names[pid] = name
            self.names.setdefault(pid, "?")
            self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak)
            if anon is not None:
                if pid == os.getpid():
                    self._driver_sample(round(anon / 1024, 1))
                self.anon_peaks[pid] = max(self.anon_peaks.get(pid, 0.0), round(anon / 1024, 1))
            total += now or 0.0
        self.max_total_rss_mib = max(self.max_total_rss_mib, round(total, 1))

    def _driver_sample(self, anon_mib: float) -> None:
        now = time.perf_counter()
        if anon_mib > self.anon_peaks.get(os.getpid(), 0.0):
            self.driver_peak_at = now
        if not self.driver_timeline or now - self.driver_timeline[-1][0] >= self.timeline_s:
            self.driver_timeline.append((now, anon_mib))

    def summary(self) -> dict[str, Any]:
        driver = self.peaks.get(os.getpid())
        workers = {pid: mib for pid, mib in self.peaks.items() if pid != os.getpid() and _is_worker(self.names[pid])}
        others = {pid: mib for pid, mib in self.peaks.items() if pid != os.getpid() and pid not in workers}
        top = max(workers.items(), key=lambda kv: kv[1]) if workers else None
        anon_top = max(workers, key=lambda pid: self.anon_peaks.get(pid, 0.0)) if workers else None
        system_top = max(others, key=lambda pid: self.anon_peaks.get(pid, 0.0)) if others else None
        kinds: dict[str, float] = {}  # one figure a kind of process: the largest of its processes
        for pid, anon in self.anon_peaks.items():
            if pid != os.getpid():
                kind = process_kind(self.names[pid])
                kinds[kind] = max(kinds.get(kind, 0.0), anon)
        return {
            "driver_peak_rss_mib": driver,
            "worker_peak_rss_mib": top[1] if top else None,
            "worker_peak_process": self.names[top[0]] if top else None,
            "driver_peak_anon_mib": self.anon_peaks.get(os.getpid()),
            "worker_peak_anon_mib": self.anon_peaks.get(anon_top, 0.0) if anon_top else None,
            "worker_peak_anon_process": self.names[anon_top] if anon_top else None,
            "worker_peaks_rss_mib": {self.names[pid][:60]: mib for pid, mib in sorted(workers.items())},
            "workers_seen": len(workers),
            "other_ray_processes_peak_rss_mib": round(max(others.values()), 1) if others else None,
            "ray_system_peak_anon_mib": self.anon_peaks.get(system_top, 0.0) if system_top else None,
            "ray_system_peak_anon_process": process_kind(self.names[system_top]) if system_top else None,
            "process_kinds_peak_anon_mib": dict(sorted(kinds.items())),
            "all_processes_max_total_rss_mib": self.max_total_rss_mib,
        }


class ObjectStoreSampler(_Sampler):
    """Samples, every `interval_s`, the bytes held in the object stores of every node of the connected Ray cluster,
    from the raylet's store stats (the figures behind `ray memory --stats-only`); ray.available_resources() does not
    show them: its `object_store_memory` is a scheduling resource, not what is stored. Call inside a running Ray."""

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__(interval_s)
        import ray
        from ray._private.internal_api import get_state_from_address

        self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self.samples = 0
        self.peak_used_mib = 0.0
        self.capacity_mib: float | None = None
        self.peak_spilled_mib = 0.0
        self.peak_objects = 0
        self._sum_used_mib = 0.0

    def sample(self) -> None:
        from ray._private.internal_api import get_memory_info_reply

        try:
            stats = get_memory_info_reply(self._state, timeout_seconds=10.0).store_stats
        except Exception:  # noqa: BLE001 - a missed sample (Ray shutting down), not a failed measurement
            return
        used = stats.object_store_bytes_used / 2**20
        self.samples += 1
        self._sum_used_mib += used
        self.peak_used_mib = max(self.peak_used_mib, round(used, 2))
        self.capacity_mib = round(stats.object_store_bytes_avail / 2**20, 1)
        self.peak_spilled_mib = max(self.peak_spilled_mib, round(stats.spilled_bytes_total / 2**20, 2))
        self.peak_objects = max(self.peak_objects, stats.num_local_objects)

    def summary(self) -> dict[str, Any]:
        return {
            "object_store_peak_used_mib": self.peak_used_mib,
            "object_store_mean_used_mib": round(self._sum_used_mib / self.samples, 2) if self.samples else None,
            "object_store_capacity_mib": self.capacity_mib,
            "object_store_peak_objects": self.peak_objects,
            "object_store_spilled_mib": self.peak_spilled_mib,
            "object_store_samples": self.samples,
        }


def process_kind(cmdline: str) -> str:
    """What a process is, without its arguments: a Ray worker's title (`ray::_StatsActor`), else the program's name
    (`gcs_server`, `raylet`), or the script's for a Python program (`dashboard.py`)."""
    if cmdline.startswith("ray::"):  # an actor's title names the method it runs: ray::_StatsActor.update_metrics
        title = cmdline.split(" ", 1)[0]
        head, _, method = title.rpartition(".")
        return head if head != "ray:" and method.isidentifier() else title
    words = cmdline.split()
    if not words:
        return "?"
    program = Path(words[0]).name
    script = next((Path(w).name for w in words[1:] if w.endswith(".py")), None)
    return script if program.startswith("python") and script else program


def _is_worker(cmdline: str) -> bool:
    return "default_worker.py" in cmdline or cmdline.startswith("ray::")


class CpuSampler(_Sampler):
    """CPU seconds used by this process and every process below it while the block runs, processes that start or
    end inside it included (sampled every `interval_s`; a process that ends loses at most its last interval)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        super().__init__(interval_s)
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}

    def __enter__(self) -> CpuSampler:
        for pid in process_tree():
            value = cpu_seconds(pid)
            if value is not None:
                self._start[pid] = self._last[pid] = value
        return super().__enter__()

    def sample(self) -> None:
        for pid in process_tree():
            value = cpu_seconds(pid)
            if value is not None:
                self._last[pid] = max(self._last.get(pid, 0.0), value)

    @property
    def seconds(self) -> float:
        return sum(last - self._start.get(pid, 0.0) for pid, last in self._last.items())

    def now(self) -> float:
        """CPU seconds used since the block started, sampled now."""
        self.sample()
        return self.seconds


def run_child(cmd: list[str], timeout_s: float | None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a bench child in its own session; past `timeout_s` end its whole process group (the child, the Ray it
    started, nothing else). Returns (return code, stdout, stderr); -9 when it was ended."""
    import signal
    import subprocess

    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
    return child.returncode, out, err
