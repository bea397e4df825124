"""The nightly job: the catalogue's new or changed products since the last finished run, against the scene set.

    tryall submit nightly --config configs/nightly.yaml --set run_id=2026-11-25
    # the same, with Ray's CLI:
    ray job submit --address http://127.0.0.1:8265 --submission-id nightly-2026-11-25 \\
      --runtime-env infra/runtime_env.yaml -- python -m jobs.nightly --config configs/nightly.yaml \\
      --set run_id=2026-11-25

`selection.incremental` is on unless the configuration turns it off: a product is new or changed when its
`updated_at` is later than what the last finished whole-catalogue run under the same `output_uri` read, or, without
`updated_at`, when no earlier finished run there has an `ok` row for its product_id and image_uri. The first nightly
under an `output_uri` takes the whole catalogue. See pipeline/inference/selection.py.
"""

from __future__ import annotations

import sys

from jobs.cli import job_main, print_summary, with_job_defaults
from pipeline.inference.checks import require_trained_models
from pipeline.inference.config import RunConfig
from pipeline.inference.runner import run


def nightly(cfg: RunConfig) -> int:
    require_trained_models(cfg)
    result = run(with_job_defaults(cfg, incremental=True))
    print_summary(result.summary, result.run_uri)
    return 0


main = job_main("nightly", RunConfig, nightly)

if __name__ == "__main__":
    sys.exit(main())
