"""The evaluation job: score a finished run folder, compare its variants pair by pair, write its review page.

    tryall evaluate --set run_folder=s3://tryall-output/runs/ab/2026-11-25-dtc-v2 \\
      --set encoders.clip=s3://tryall-models/clip-vit-b32 --set encoders.dinov2=s3://tryall-models/dinov2-vitl14
    tryall submit evaluate --config configs/evaluate.yaml --set run_folder=...    # on the cluster

Writes `eval/metrics.parquet` (one row per pair and variant: CLIP-I, DINO-I) and `eval/summary.json` (per variant:
mean scores, FD-DINOv2, KID and FID against the real set with their n; the paired A/B table), prints the table, then
writes `report/index.html` (unless report.write is false). Embeddings run on GPU actors when the cluster has GPUs,
else on CPU. A run folder without summary.json (not finished) is refused with exit status 2.
"""

from __future__ import annotations

import sys

import ray

from jobs.cli import job_main
from pipeline.core.storage import join
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.evaluation import evaluate_run, summary_lines
from pipeline.evaluate.report import write_report


def evaluate(cfg: EvalConfig) -> int:
    if not ray.is_initialized():
        ray.init()
    evaluation = evaluate_run(cfg)
    print(summary_lines(evaluation))
    print(f"\nwritten: {join(cfg.run_uri, 'eval', 'metrics.parquet')}, {join(cfg.run_uri, 'eval', 'summary.json')}")
    if cfg.report.write:
        report = write_report(cfg.run_uri, cfg.report, cfg.s3)
        print(f"review page: {report.index_uri} ({report.pages} pages)")
    return 0


main = job_main("evaluate", EvalConfig, evaluate)

if __name__ == "__main__":
    sys.exit(main())
