"""The review page of a finished run: `tryall report RUN_URI` writes RUN_URI/report/index.html.

    tryall report demo_output/runs/demo-20261125-101500
    tryall report s3://tryall-output/runs/ab/2026-11-25-dtc-v2 --set report.rows_per_page=100

A static page (no server, no internet): the run's summary and, when jobs.evaluate has scored it, its metrics and A/B
table; one row per pair with thumbnails of the scene (region outlined), the product and each variant's output
(linked to the full image); sortable by a metric or an A/B difference, worst first; failed pairs grouped by reason.
Open it from a local copy of the run folder or serve the folder from S3 as it is.
"""

from __future__ import annotations

import json
import sys

import ray

from jobs.cli import job_parser, run_job
from jobs.registry import JOBS, default_prog
from pipeline.evaluate.config import ReportJobConfig
from pipeline.evaluate.report import write_report


def report(cfg: ReportJobConfig) -> int:
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    result = write_report(cfg.run_uri, cfg.report, cfg.s3)
    print(f"review page: {result.index_uri} ({result.pages} pages, {result.thumbnails} thumbnails"
          + (f", {result.thumbnails_failed} could not be made" if result.thumbnails_failed else "") + ")")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = job_parser(ReportJobConfig, JOBS["report"].description, prog or default_prog("report"))
    p.add_argument("run_uri", metavar="RUN_URI", help="the finished run folder (a local path or s3://)")
    args = p.parse_args(argv)
    # As a YAML string literal: a folder named like a date or a number stays the text it is.
    args.set = [f"run_folder={json.dumps(args.run_uri)}", *args.set]
    return run_job(args, ReportJobConfig, report)


if __name__ == "__main__":
    sys.exit(main())
