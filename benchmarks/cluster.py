"""The cluster part: does throughput scale with the number of inference actors on a (simulated) cluster?

A `ray.cluster_utils.Cluster` on this machine, shaped like the real one: a head with CPU 0 (control plane and
driver only), CPU worker nodes for the CPU stages, and one node per fake GPU (`num_gpus=1`). The model is the `noop`
model made to sleep a fixed time per batch, which stands in for the GPU: the actors then cost no CPU, and with the
sleep long enough that the CPU stages stay far below their capacity, the ideal throughput is
actors x batch_size / sleep. The sleep is put into every Ray worker by a `worker_process_setup_hook` of this module
(`sleeping_noop`), since the actors run in other processes than the bench.

Each point (1, 2, 4 actors) is one run of the same pairs on the same cluster, after a warm-up run; throughput is
steady state: pairs from the first to the last batch the driver received, over that window.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.e2e import batch_clock, run_config, write_inputs
from benchmarks.measure import run_child
from benchmarks.memory import inputs_at

SLEEP_ENV = "TRYALL_BENCH_NOOP_SLEEP_S"
START_BUDGET_S = 600.0


def sleeping_noop() -> None:
    """Ray worker setup hook: the `noop` model sleeps $TRYALL_BENCH_NOOP_SLEEP_S seconds per batch in this worker."""
    seconds = float(os.environ.get(SLEEP_ENV) or 0.0)
    if seconds <= 0:
        return
    from pipeline.inference import stages

    original = stages.NoopSampler.generate

    def generate(self: Any, batch: Any) -> Any:
        time.sleep(seconds)
        return original(self, batch)

    stages.NoopSampler.generate = generate  # type: ignore[method-assign]


@dataclass(frozen=True)
class ClusterPlan:
    pairs: int = 100_000  # per point
    actors: tuple[int, ...] = (1, 2, 4)
    sleep_s: float = 0.1  # per batch, in every actor
    batch_size: int = 16
    cpu_nodes: int = 2
    cpus_per_node: int = 4  # logical CPUs of each CPU node
    object_store_mib: int = 512  # per node
    warm_up_pairs: int = 0  # 0: two batches per actor of the largest point


@contextlib.contextmanager
def simulated_cluster(plan: ClusterPlan) -> Iterator[Any]:
    """Head (CPU 0, GPU 0), CPU nodes, and one 1-CPU node with one fake GPU per actor of the largest point; this
    process connected as the driver, with the sleeping model in every worker. Everything shut down after."""
    import ray
    from ray.cluster_utils import Cluster

    store = plan.object_store_mib * 2**20
    head = {"num_cpus": 0, "num_gpus": 0, "object_store_memory": store}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(plan.cpu_nodes):
            cluster.add_node(num_cpus=plan.cpus_per_node, num_gpus=0, object_store_memory=store)
        for _ in range(max(plan.actors)):
            cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=store)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env={"worker_process_setup_hook": "benchmarks.cluster.sleeping_noop",
                              "env_vars": {SLEEP_ENV: str(plan.sleep_s)}})
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def point(cfg: Any, actors: int, plan: ClusterPlan) -> dict[str, Any]:
    """One run: steady-state pairs/s, against the ideal actors x batch_size / sleep."""
    import pyarrow.compute as pc

    from pipeline.inference import record
    from pipeline.inference.runner import run

    arrivals: list[tuple[float, float, int]] = []
    with batch_clock(arrivals):
        started = time.perf_counter()
        result = run(cfg)
        wall = time.perf_counter() - started
    table = record.read_metadata(cfg)
    per_batch = (table.column("inference_s").to_numpy(zero_copy_only=False) * plan.batch_size).tolist()
    ideal = actors * plan.batch_size / plan.sleep_s
    out: dict[str, Any] = {
        "actors": actors, "pairs": result.summary.get("pairs"), "ok": result.summary.get("by_status", {}).get("ok"),
        "wall_s": round(wall, 2), "batches_seen": len(arrivals),
        "inference_nodes": len(set(pc.drop_null(table.column("inference_node")).to_pylist())),
        "actor_seconds_per_batch": round(statistics.median(per_batch), 4) if per_batch else None,
        "ideal_pairs_per_s": round(ideal, 2),
    }
    if len(arrivals) >= 3:
        rows = sum(n for _, _, n in arrivals[1:])
        window = arrivals[-1][0] - arrivals[0][0]
        out.update(steady_pairs=rows, steady_window_s=round(window, 2), pairs_per_s=round(rows / window, 2),
                   of_ideal=round(rows / window / ideal, 3), first_batch_after_s=round(arrivals[0][0] - started, 2))
    return out


def cluster_child(plan: ClusterPlan, root: Path) -> dict[str, Any]:
    """Every point of `plan` on one simulated cluster (the inputs under root/in were written by the parent)."""
    def cfg(name: str, n: int, actors: int, inputs_root: Path) -> Any:
        return run_config(inputs_at(inputs_root, n), root / "out", name, source="noop", resolution=64, steps=1,
                          batch_size=plan.batch_size, gpus=actors)

    warm_n = plan.warm_up_pairs or 2 * plan.batch_size * max(plan.actors)
    started = time.perf_counter()
    with simulated_cluster(plan):
        cluster_s = time.perf_counter() - started
        warm = point(cfg("warm", warm_n, max(plan.actors), root / "warm"), max(plan.actors), plan)
        points = [point(cfg(f"actors-{a}", plan.pairs, a, root / "in"), a, plan) for a in plan.actors]
    return {"cluster_start_s": round(cluster_s, 2), "warm_up": warm, "points": points}


def scaling(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput of each point over (its actors / the first point's actors) x the first point's: 1.0 is linear."""
    base = points[0]
    eff = {}
    for p in points:
        if p.get("pairs_per_s") and base.get("pairs_per_s"):
            eff[str(p["actors"])] = round(p["pairs_per_s"] / (p["actors"] / base["actors"] * base["pairs_per_s"]), 3)
    rest = [v for k, v in eff.items() if k != str(base["actors"])]
    return {"scaling_efficiency": eff, "min_scaling_efficiency": min(rest) if rest else None,
            "at_least_0_9_linear": bool(rest) and min(rest) >= 0.9}


def bench_cluster(plan: ClusterPlan | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """The points in a child process (its own cluster, whatever Ray this process has), then their scaling."""
    plan = plan or ClusterPlan()
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tryall-cluster-")))
        write_inputs(root / "in", plan.pairs, (96, 72), (48, 48))
        write_inputs(root / "warm", plan.warm_up_pairs or 2 * plan.batch_size * max(plan.actors), (96, 72), (48, 48))
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        # Generous: start-up, and every point three times slower than ideal (a stuck cluster must not hang the bench).
        budget = START_BUDGET_S + 3 * sum(plan.pairs * plan.sleep_s / (a * plan.batch_size) for a in plan.actors)
        rc, out, err = run_child([sys.executable, "-m", "benchmarks.cluster", json.dumps(asdict(plan)), str(root)],
                                 budget, env)
        if rc:
            raise RuntimeError(f"cluster bench failed (rc {rc}, -9: ended after {budget:.0f} s):\n{err[-4000:]}")
        measured = json.loads(out.strip().splitlines()[-1])
    cpu_demand = max(plan.actors) * plan.batch_size / plan.sleep_s
    return {
        **scaling(measured["points"]), **measured, "plan": asdict(plan),
        "cpu_stage_demand_pairs_per_s_at_most": round(cpu_demand, 1),
        "note": "simulated cluster (ray.cluster_utils.Cluster) on one machine: head CPU 0, "
                f"{plan.cpu_nodes} CPU node(s) of {plan.cpus_per_node} logical CPUs, one 1-CPU node per fake GPU; "
                f"noop model sleeping {plan.sleep_s} s per batch of {plan.batch_size} (worker_process_setup_hook "
                "benchmarks.cluster.sleeping_noop). pairs_per_s: steady state, first to last batch at the driver. "
                "scaling_efficiency: pairs_per_s / (actors x the 1-actor pairs_per_s). Every node shares this "
                "machine's cores: the CPU stages must stay well below its capacity at the largest point for the "
                "figure to measure the pipeline's scaling rather than the machine's.",
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m benchmarks.cluster PLAN_JSON WORKDIR")
    fields = json.loads(sys.argv[1])
    fields["actors"] = tuple(fields["actors"])
    print(json.dumps(cluster_child(ClusterPlan(**fields), Path(sys.argv[2]))))
