"""The backfill job: a slice of the catalogue (categories, product ids, a shard) against a scene set.

    tryall submit backfill --config configs/backfill.yaml \\
      --set run_id=2026-q4-s0 --set selection.shard_index=0 --set selection.shard_count=4

Shards split the sliced catalogue by a stable hash of product_id: shards 0..n-1 are disjoint and together cover the
slice, so n submissions can run side by side, each with its own run_id (the submission id derives from the run id,
so a shard submitted twice under the same run_id is refused). Not incremental unless `selection.incremental: true`.
"""

from __future__ import annotations

import logging
import sys

from jobs.cli import job_main, print_summary, with_job_defaults
from pipeline.inference.checks import require_trained_models
from pipeline.inference.config import RunConfig
from pipeline.inference.runner import run

log = logging.getLogger(__name__)


def backfill(cfg: RunConfig) -> int:
    sel = cfg.selection
    log.info("backfill %s: categories %s, %s product ids, shard %d of %d", cfg.run_id, sel.categories or "all",
             "listed" if sel.product_ids or sel.product_ids_uri else "all", sel.shard_index, sel.shard_count)
    require_trained_models(cfg)
    result = run(with_job_defaults(cfg, incremental=False))
    print_summary(result.summary, result.run_uri)
    return 0


main = job_main("backfill", RunConfig, backfill)

if __name__ == "__main__":
    sys.exit(main())
