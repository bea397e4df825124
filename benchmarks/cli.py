"""Benchmarks side by side: `python -m benchmarks` (or `make bench`) writes one JSON report and prints a table.

    python -m benchmarks                          # every part but cluster, report under benchmarks/results/
    python -m benchmarks --parts model,cpu_stages --out /tmp/r.json
    python -m benchmarks --quick                   # test-sized (seconds, figures meaningless)

Parts: `model` (naive reference vs our fast path, then other batch sizes and DPM-Solver++), `pipeline` (the whole
Ray pipeline against the model alone: efficiency, and the framework's overhead with the noop model), `cpu_stages`
(core-ms per pair of decode, mask, collage, paste-back, encode on a 12 MP scene), `memory` (per run size: driver and
worker private memory, object-store use, time to the first metadata part, per-pair overhead, ratios to the smallest
run; `--memory-max-seconds` bounds each run), `train` (one training worker's samples/s and peak memory: tiny on CPU,
sd15 at 512 px on a GPU), `demo_quality` (region PSNR against the ground truth on held-out procedural pairs: the
demo model, the untrained tiny, both with the hint branch zeroed, and the copy-paste collage), `seams` (colour
difference where the pasted crop meets the scene, per colour-match method, and what matching and measuring cost per
pair at 512 px crops), and, only when named,
`cluster` (a simulated cluster with 1, 2, 4 fake-GPU actors: does throughput scale). Every part records the machine
it ran on; benchmarks/README.md explains the fields.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

PARTS = ("model", "pipeline", "cpu_stages", "memory", "train", "demo_quality", "seams", "cluster")
DEFAULT_PARTS = PARTS[:-1]  # cluster: opt-in, a run of --cluster-pairs per point


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                   help=f"comma-separated subset of {','.join(PARTS)} (default: all but cluster)")
    p.add_argument("--out", help="report path (default benchmarks/results/<cpu|gpu>-<date>.json)")
    p.add_argument("--quick", action="store_true", help="test-sized runs: checks the bench works, figures meaningless")
    g = p.add_argument_group("model")
    g.add_argument("--model-source", help="tiny | sd15 (default: sd15 on a GPU, tiny on CPU)")
    g.add_argument("--model-resolution", type=int, help="crop size in px (default: 512 on a GPU, 128 on CPU)")
    g.add_argument("--model-batches", type=_ints, help="fast-path batch sizes, the first compared with naive")
    g.add_argument("--model-steps", type=int, help="DDIM steps (default 40, the paper's)")
    g.add_argument("--model-repeats", type=int, help="timed calls per row (median)")
    g.add_argument("--compile", action="store_true", help="torch.compile the fast path's denoiser")
    g.add_argument("--cpu-threads", type=int, default=1, help="torch threads for the CPU model part (default 1)")
    g = p.add_argument_group("pipeline")
    g.add_argument("--pipeline-pairs", type=int, help="N: the model runs do a warm-up, N and 2N pairs (default 96)")
    g.add_argument("--overhead-pairs", type=int, help="N of the noop runs (default 1000)")
    g = p.add_argument_group("cpu_stages")
    g.add_argument("--scene-size", type=_size, default=(4000, 3000), help="scene WxH (default 4000x3000)")
    g.add_argument("--product-size", type=_size, default=(1000, 1000), help="product WxH (default 1000x1000)")
    g.add_argument("--cpu-repeats", type=int, default=15, help="pairs timed (median)")
    g.add_argument("--pairs-per-scene", type=int, default=8,
                   help="consecutive pairs of one scene in the scene_shared figures (default 8)")
    g = p.add_argument_group("memory")
    g.add_argument("--memory-sizes", type=_ints, default=(1000, 20000), help="pairs per run (default 1000,20000)")
    g.add_argument("--memory-max-seconds", type=float,
                   help="stop each run after this long and report it as partial (default: no limit)")
    g = p.add_argument_group("train")
    g.add_argument("--train-source", help="tiny | sd15 (default: sd15 at 512 px on a GPU, tiny at 256 px on CPU)")
    g.add_argument("--train-resolution", type=int, help="training crop size in px")
    g.add_argument("--train-batch", type=int, help="samples per step of the one worker")
    g = p.add_argument_group("demo_quality")
    g.add_argument("--quality-sources", help="comma-separated model sources, the first compared with the second "
                   "(default demo,tiny)")
    g.add_argument("--quality-pairs", type=int, help="held-out pairs (default 64)")
    g = p.add_argument_group("cluster")
    g.add_argument("--cluster-pairs", type=int, default=100_000, help="pairs per point (default 100000)")
    g.add_argument("--cluster-actors", type=_ints, default=(1, 2, 4), help="fake-GPU actors per point (default 1,2,4)")
    g.add_argument("--cluster-sleep", type=float, default=0.1, help="the model's seconds per batch (default 0.1)")
    g.add_argument("--cluster-batch", type=int, default=16, help="pairs per model batch (default 16)")
    g.add_argument("--cluster-cpu-nodes", type=int, default=2, help="CPU worker nodes (default 2)")
    g.add_argument("--cluster-node-cpus", type=int, default=4, help="logical CPUs per CPU node (default 4)")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"error: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from benchmarks import machine
    from benchmarks.report import headline, table

    on_gpu = torch.cuda.is_available()
    report: dict = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine.describe(),
        "gpu_measured": on_gpu,
        "quick": args.quick,
        "notes": [] if on_gpu else [
            "No GPU: every figure is a CPU figure. The model part compares naive and fast paths with the tiny DTC "
            "on CPU; the GPU targets (fast path >= 3x naive for sd15 at 512 px, < 0.5 s/image on an H100 at 40 "
            "DDIM steps) are not measured by this report."
        ],
    }
    for part in parts:
        started = time.perf_counter()
        load_before = machine.load_average()
        print(f"[bench] {part} ...", file=sys.stderr, flush=True)
        report[part] = _run_part(part, args, on_gpu)
        report[part]["measured_on"] = {**machine.describe(), "load_average_before": load_before}
        report[part]["bench_seconds"] = round(time.perf_counter() - started, 1)
    report["headline"] = headline(report)

    out = Path(args.out) if args.out else Path("benchmarks/results") / (
        f"{'gpu' if on_gpu else 'cpu'}-{time.strftime('%Y-%m-%d')}{'-quick' if args.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    if "seams" in report:
        from benchmarks.seams import table_lines

        print("\n" + "\n".join(table_lines(report["seams"])))
    print(f"\nreport: {out}")
    return 0


def _run_part(part: str, args: argparse.Namespace, on_gpu: bool) -> dict:
    import dataclasses

    import torch

    if part == "model":
        from benchmarks.model import ModelPlan, bench_model

        plan = ModelPlan.default(torch.device("cuda" if on_gpu else "cpu"), quick=args.quick)
        overrides = {"source": args.model_source, "resolution": args.model_resolution,
                     "batch_sizes": args.model_batches, "steps": args.model_steps, "repeats": args.model_repeats}
        plan = dataclasses.replace(plan, compile=args.compile, **{k: v for k, v in overrides.items() if v})
        return bench_model(plan, cpu_threads=args.cpu_threads)
    if part == "pipeline":
        from benchmarks.e2e import PipelinePlan, bench_pipeline

        plan = PipelinePlan()
        if args.quick:
            plan = dataclasses.replace(plan, pairs=12, scene_size=(96, 72), product_size=(48, 48), resolution=64,
                                       steps=2, overhead_pairs=24, single_runs=True)
        if args.pipeline_pairs:
            plan = dataclasses.replace(plan, pairs=args.pipeline_pairs)
        if args.overhead_pairs:
            plan = dataclasses.replace(plan, overhead_pairs=args.overhead_pairs)
        return bench_pipeline(plan)
    if part == "cpu_stages":
        from benchmarks.cpu_stages import bench_cpu_stages

        if args.quick:
            return bench_cpu_stages(scene_size=(400, 300), product_size=(100, 100), repeats=2, pairs_per_scene=3)
        return bench_cpu_stages(scene_size=args.scene_size, product_size=args.product_size, repeats=args.cpu_repeats,
                                pairs_per_scene=args.pairs_per_scene)
    if part == "train":
        from benchmarks.train import TrainPlan, bench_train

        plan = TrainPlan.default(torch.device("cuda" if on_gpu else "cpu"), quick=args.quick)
        overrides = {"source": args.train_source, "resolution": args.train_resolution, "batch_size": args.train_batch}
        return bench_train(dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v}),
                           cpu_threads=args.cpu_threads)
    if part == "demo_quality":
        from benchmarks.demo_quality import QualityPlan, bench_demo_quality

        plan = QualityPlan(pairs=4, steps=2) if args.quick else QualityPlan()
        if args.quality_sources:
            plan = dataclasses.replace(plan, sources=tuple(s for s in args.quality_sources.split(",") if s))
        if args.quality_pairs:
            plan = dataclasses.replace(plan, pairs=args.quality_pairs)
        return bench_demo_quality(dataclasses.replace(plan, torch_threads=args.cpu_threads) if not on_gpu else plan)
    if part == "seams":
        from benchmarks.seams import SeamsPlan, bench_seams

        plan = SeamsPlan.quick() if args.quick else SeamsPlan()
        return bench_seams(plan if on_gpu else dataclasses.replace(plan, torch_threads=args.cpu_threads))
    if part == "cluster":
        from benchmarks.cluster import ClusterPlan, bench_cluster

        if args.quick:
            return bench_cluster(ClusterPlan(pairs=48, actors=(1, 2), sleep_s=0.2, batch_size=4, cpu_nodes=1,
                                             cpus_per_node=2, object_store_mib=128))
        return bench_cluster(ClusterPlan(pairs=args.cluster_pairs, actors=args.cluster_actors,
                                         sleep_s=args.cluster_sleep, batch_size=args.cluster_batch,
                                         cpu_nodes=args.cluster_cpu_nodes, cpus_per_node=args.cluster_node_cpus))
    from benchmarks.memory import bench_memory

    return bench_memory((20, 40) if args.quick else args.memory_sizes, max_seconds=args.memory_max_seconds)

