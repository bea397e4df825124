"""The run's pairs, planned chunk by chunk in Ray Data tasks and written to the run folder, then read back as a stream.

The driver never holds the pairs. Ray Data reads the pairs manifest (or takes the chosen catalogue) in chunks of
PLAN_CHUNK_ROWS; each task pairs its chunk, drops the pairs an earlier attempt finished, orders the rest by scene
for the stages' per-process caches, and writes one Parquet part per variant under `plan/<variant>/`. The driver
keeps one small row per part (its location and pair count), so it knows how many pairs each pass computes before
any GPU is requested, and which pairs of a pass got no row afterwards (`unrecorded`).
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from pipeline.core.storage import absolute, filesystem, join, read_bytes, write_bytes
from pipeline.inference.config import RunConfig
from pipeline.inference.key_sets import KeySet
from pipeline.inference.manifests import Manifests, pairs_columns, pairs_dataset
from pipeline.inference.pairing import PAIR_SCHEMA
from pipeline.inference.ray_runtime import retry_arguments
from pipeline.inference.selection import Choice, pairs_of

log = logging.getLogger(__name__)

PLAN_CHUNK_ROWS = 4096  # manifest rows (or products) per planning task: its memory, and the scene-ordering window
PART_SCHEMA = pa.schema([("variant", pa.string()), ("uri", pa.string()), ("pairs", pa.int64())])


@dataclass(frozen=True)
class PlannedPass:
    """One variant's share of the plan: the parts that hold its pairs, and each part's pair count."""

    variant: str
    parts: list[str]
    part_pairs: tuple[int, ...]

    @property
    def pairs(self) -> int:
        return sum(self.part_pairs)

    def segments(self, max_pairs: int) -> Iterator[PlannedPass]:
        """The pass cut into consecutive runs of whole parts of at most `max_pairs` pairs (a part larger than that
        alone): each is one Ray Data execution, so what Ray Data keeps per block in the driver stays bounded."""
        start, total = 0, 0
        for i, count in enumerate(self.part_pairs):
            if i > start and total + count > max_pairs:
                yield PlannedPass(self.variant, self.parts[start:i], self.part_pairs[start:i])
                start, total = i, 0
            total += count
        yield PlannedPass(self.variant, self.parts[start:], self.part_pairs[start:])


def plan_root(cfg: RunConfig) -> str:
    return join(absolute(cfg.run_uri), "plan")


def order_by_scene(pairs: pa.Table) -> pa.Table:
    """A scene's pairs side by side, so that consecutive pairs of one task share it: the CPU stages then reuse the
    scene they read, prepared or decoded for the previous pair (`stages.PREPARE_SCENE_FILE`,
    `preprocess.PREPARE_SCENES`, `postprocess.COMPOSITE_SCENES`)."""
    return pairs.sort_by([("scene_id", "ascending"), ("product_id", "ascending")])


def plan_chunk(chunk: pa.Table, cfg: RunConfig, chosen: pa.Table, scenes: pa.Table, done: KeySet) -> pa.Table:
    """A planning task: the chunk's pairs less those done, one part per variant written; returns the parts' rows."""
    if cfg.pairing.strategy == "pairs":
        pairs = pairs_of(cfg, chosen, scenes, pairs_columns(chunk))
    else:
        pairs = pairs_of(cfg, chunk, scenes, None)
    pairs = done.without(pairs)
    rows = []
    for variant in cfg.variant_names():
        # Without configured variants one pass computes every pair, whatever variant its manifest row names.
        mine = pairs.filter(pc.equal(pairs.column("variant"), variant)) if cfg.variants else pairs
        part = order_by_scene(mine)
        if not part.num_rows:
            continue
        uri = join(plan_root(cfg), variant, f"part-{uuid.uuid4().hex}.parquet")
        sink = io.BytesIO()
        pq.write_table(part, sink, compression="zstd")
        write_bytes(uri, sink.getvalue(), cfg.s3)
        rows.append({"variant": variant, "uri": uri, "pairs": part.num_rows})
    return pa.Table.from_pylist(rows, schema=PART_SCHEMA)


def _chunks(cfg: RunConfig, manifests: Manifests, choice: Choice) -> ray.data.Dataset:
    """What the planning tasks map over: the pairs manifest as Ray Data reads it, or the chosen catalogue."""
    if cfg.pairing.strategy == "pairs":
        assert manifests.pairs_uri is not None, "pairing strategy 'pairs' needs a pairs manifest"
        fs, path = filesystem(manifests.pairs_uri, cfg.s3)
        columns = [c for c in PAIR_SCHEMA.names if c in pairs_dataset(manifests.pairs_uri, cfg.s3).schema.names]
        return ray.data.read_parquet(path, filesystem=fs).select_columns(columns)  # pushed down into the read
    return ray.data.from_arrow(choice.catalogue)


def write_plan(cfg: RunConfig, manifests: Manifests, choice: Choice, done: KeySet) -> list[PlannedPass]:
    """Plan every variant's pairs (one Ray Data pass, CPU only) and return what each variant's pass computes."""
    fs, root = filesystem(plan_root(cfg), cfg.s3)
    if fs.exists(root):
        fs.rm(root, recursive=True)  # an earlier attempt's plan: this attempt plans again from the manifests
    chosen = choice.catalogue if cfg.pairing.strategy == "pairs" else None
    compute = cfg.compute
    with retry_arguments():
        planned = _chunks(cfg, manifests, choice).map_batches(
            plan_chunk, batch_size=PLAN_CHUNK_ROWS, batch_format="pyarrow",
            fn_kwargs={"cfg": cfg, "chosen": chosen, "scenes": manifests.scenes, "done": done},
            num_cpus=compute.cpus_per_task, max_retries=compute.max_task_retries,
        )
    parts = planned.take_all()
    passes = []
    for variant in cfg.variant_names():
        mine = sorted((p for p in parts if p["variant"] == variant), key=lambda p: p["uri"])
        passes.append(PlannedPass(variant, [p["uri"] for p in mine], tuple(p["pairs"] for p in mine)))
    return passes


def pair_stream(cfg: RunConfig, planned: PlannedPass) -> ray.data.Dataset:
    """A pass's pairs as Ray Data reads them back from the plan, in parts as written."""
    fs, _ = filesystem(plan_root(cfg), cfg.s3)
    return ray.data.read_parquet([filesystem(u, cfg.s3)[1] for u in planned.parts], filesystem=fs)


def read_part(uri: str, cfg: RunConfig) -> pa.Table:
    return pq.read_table(io.BytesIO(read_bytes(uri, cfg.s3)), schema=PAIR_SCHEMA)


def unrecorded(cfg: RunConfig, planned: PlannedPass, recorded: KeySet) -> Iterator[pa.Table]:
    """The pass's pairs that have no row in `recorded`, part by part (read on the driver one part at a time)."""
    for uri in planned.parts:
        missing = recorded.without(read_part(uri, cfg))
        if missing.num_rows:
            yield missing


def remove_plan(cfg: RunConfig) -> None:
    """The plan is the attempt's working state: gone once the attempt's summary is written."""
    fs, root = filesystem(plan_root(cfg), cfg.s3)
    if fs.exists(root):
        fs.rm(root, recursive=True)
