"""The embedded default: a generated sample set through the whole pipeline, on a local Ray, with the demo model.

    tryall demo                                  # writes under ./demo_output (or: python -m jobs.demo)
    tryall demo --output-uri s3://bucket/demo    # with TRYALL_S3__ENDPOINT_URL etc. for a local S3
    tryall demo --set model.source=tiny          # the untrained test model instead: noise where the product goes

The demo model (`model.source=demo`, shipped in the package) is the `small` configuration trained by `make
demo-model` on procedural products and rooms like the sample set's, at its 64 px crop: it knows those, not photos.
"""

from __future__ import annotations

import sys
import time

import ray

from jobs.cli import job_parser, print_summary, run_job
from jobs.registry import JOBS, default_prog
from pipeline.core.storage import join
from pipeline.inference.config import RunConfig
from pipeline.inference.ray_runtime import start_local_ray
from pipeline.inference.runner import run
from pipeline.synthetic.samples import write_sample_set


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    description = f"{JOBS['demo'].description}. The demo sets run_id, catalogue_uri, scenes_uri and output_uri."
    p = job_parser(RunConfig, description, prog or default_prog("demo"))
    p.add_argument("--output-uri", default="demo_output", help="where inputs and the run go (local path or s3://)")
    p.add_argument("--products", type=int, default=6)
    p.add_argument("--scenes", type=int, default=4)
    args = p.parse_args(argv)
    inputs = join(args.output_uri, "inputs")
    run_id = time.strftime("demo-%Y%m%d-%H%M%S")
    # The demo's defaults come first, so the user's --set (and TRYALL_* variables) win over them.
    args.set = [
        f"run_id={run_id}",
        f"catalogue_uri={join(inputs, 'catalogue.parquet')}",
        f"scenes_uri={join(inputs, 'scenes.parquet')}",
        f"output_uri={join(args.output_uri, 'runs')}",
        # Its 64 px crops, 20 steps and guidance 2 (its best on held-out pairs: benchmarks/README.md,
        # demo_quality) are the model's own defaults, recorded in its dtc.json.
        "model.source=demo",
        "pairing.scenes_per_product=2",
        "output.format=png",
        "compute.batch_size=4",
        "progress_interval_s=5",
        *args.set,
    ]

    def demo(cfg: RunConfig) -> int:
        import torch

        write_sample_set(inputs, n_products=args.products, n_scenes=args.scenes, s3=cfg.s3)
        if not torch.cuda.is_available():
            cfg = cfg.model_copy(update={"compute": cfg.compute.model_copy(update={"gpus_per_actor": 0.0})})
        start_local_ray(cfg, include_dashboard=False, log_to_driver=True)
        try:
            result = run(cfg)
        finally:
            ray.shutdown()
        print_summary(result.summary, result.run_uri)
        print(f"\nlook at the composited images under {result.run_uri}/images/default/")
        return 0

    return run_job(args, RunConfig, demo)


if __name__ == "__main__":
    sys.exit(main())
