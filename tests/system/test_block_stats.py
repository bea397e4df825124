"""Ray Data's per-block statistics stay bounded in the driver (`inference.block_stats`), on a real local Ray."""

from __future__ import annotations

import re

import pytest
import ray

from pipeline.inference import block_stats
from pipeline.inference.block_stats import bound_block_stats


def _blocks_produced(stats: str, operator: str) -> int:
    found = re.search(rf"Operator \d+ {re.escape(operator)}.*?: \d+ tasks executed, (\d+) blocks produced", stats)
    assert found, stats
    return int(found.group(1))


@pytest.mark.integration
def test_each_operator_keeps_only_its_latest_block_stats(ray_local, monkeypatch):
    # The bound is read in the driver at each execution step: a small one shows the same with a few dozen blocks.
    monkeypatch.setattr(block_stats, "KEEP_BLOCKS", 8)
    blocks = 3 * block_stats.KEEP_BLOCKS
    dataset = ray.data.range(blocks).repartition(target_num_rows_per_block=1).map(lambda row: row)
    bound_block_stats(dataset)
    assert sum(batch["id"].size for batch in dataset.iter_batches(batch_size=None)) == blocks  # every row came
    # Ray Data counts the blocks in the statistics it kept: without the bound, all of them.
    assert _blocks_produced(dataset.stats(), "Map(<lambda>)") <= 2 * block_stats.KEEP_BLOCKS
    assert ray.data.DataContext.get_current().custom_execution_callback_classes == []  # only this dataset's context
