"""Keep Ray Data's per-block statistics in the driver bounded over a pass of any length.

Ray Data's map operators keep one `BlockStats` entry for every block they have output, in the driver, until the
execution ends (they feed `Dataset.stats()`). With the pipeline's four operators over blocks of 16 pairs that is
about 0.4 KB of driver memory per pair: gigabytes over a catalogue. The run's record (metadata parts, summary.json)
uses none of it. Ray Data has no setting that bounds it, so this callback, on Ray Data's own `ExecutionCallback` hook,
keeps each operator's latest entries only; `Dataset.stats()` of a pass then describes its last blocks.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.data._internal.execution.execution_callback import ExecutionCallback

KEEP_BLOCKS = 256  # entries kept per operator: the latest ones


class BoundedBlockStats(ExecutionCallback):
    """Trims every operator's per-block statistics to its latest KEEP_BLOCKS entries at each execution step."""

    def on_execution_step(self, executor: Any) -> None:
        for op in getattr(executor, "_topology", None) or ():
            kept = getattr(op, "_output_blocks_stats", None)
            if isinstance(kept, list) and len(kept) > 2 * KEEP_BLOCKS:  # trimmed in steps: one slice per 256 blocks
                del kept[:-KEEP_BLOCKS]


def bound_block_stats(dataset: ray.data.Dataset) -> None:
    """Install the callback in this dataset's own context (a copy: other datasets are not touched)."""
    context = dataset.context
    if BoundedBlockStats not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes = [*context.custom_execution_callback_classes, BoundedBlockStats]
