"""The A/B job: one run, several variants (model checkpoint and/or sampling settings), paired by seed.

    tryall submit ab --config configs/ab.yaml --set run_id=2026-11-25-steps

Each variant's images go under `images/<variant>/...` and its metadata rows carry `variant`; every variant computes
every pair with the same seed (inference.pairing.pair_seed ignores the variant), so the comparison is paired. The
variants run one after another in the same run, each in its own Ray Data pass (its model loaded once per actor).
"""

from __future__ import annotations

import sys

from jobs.cli import job_main, print_summary, with_job_defaults
from pipeline.inference.checks import require_trained_models
from pipeline.inference.config import ConfigError, RunConfig
from pipeline.inference.runner import run


def ab(cfg: RunConfig) -> int:
    if len(cfg.variants) < 2:
        raise ConfigError(
            f"invalid configuration:\n  variants: an A/B run needs at least two variants (got {len(cfg.variants)})"
        )
    require_trained_models(cfg)
    result = run(with_job_defaults(cfg, incremental=False))
    print_summary(result.summary, result.run_uri)
    print(f"variants: {', '.join(cfg.variant_names())} under {result.run_uri}/images/<variant>/")
    return 0


main = job_main("ab", RunConfig, ab)

if __name__ == "__main__":
    sys.exit(main())
