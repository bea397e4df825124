"""The main job: a product catalogue against a scene set.

    ray job submit --working-dir . -- python -m jobs.nightly --config configs/nightly.yaml
"""

from __future__ import annotations

import sys

from jobs.cli import parser, print_summary, run_job
from pipeline.config import RunConfig
from pipeline.runner import run


def nightly(cfg: RunConfig) -> int:
    result = run(cfg)
    print_summary(result.summary, result.run_uri)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.strip().splitlines()[0]).parse_args(argv)
    return run_job(args, nightly)


if __name__ == "__main__":
    sys.exit(main())
