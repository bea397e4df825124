"""The training manifest, the sample schedule, and the Ray Data pipeline that turns rows into model inputs.

Manifest (Parquet, local or s3://): `image_uri` (the target photo), the region (`mask_uri` or a box `x0, y0, x1, y1`,
as for scenes), optional `reference_uri` (a separate product photo) and optional `split` (`train` | `val`; null is
train). Other columns are ignored. Every problem is reported together in one `ManifestError` (exit status 2).

Schedule: sample g of the run is row `perm_e[g % n]` of epoch `e = g // n`, `perm_e` a permutation seeded by
(seed, e). Optimizer step s takes samples [s * G, (s + 1) * G) (G the global batch); worker r's share of each
micro-batch is a fixed slice of it. So the samples of a step do not depend on the number of workers, a restarted job
continues at sample `step * G`, and each (epoch, row) is augmented with its own seed wherever it runs.

Bad rows (unreadable image, empty region, ...) keep their place in the batch with `ok = False` and a reason: they
carry no loss and are counted, and every worker still gets the same number of equal batches (DDP needs that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import errors
from pipeline.core.errors import PairError
from pipeline.core.manifest_tables import (
    BOX_COLUMNS,
    Column,
    ManifestError,
    check_table,
    contract_columns,
    read_manifest,
)
from pipeline.core.storage import S3Config, read_bytes
from pipeline.train.config import TrainDataConfig
from pipeline.train.pairs import TrainPair, make_pair, pair_rng

TRAIN_MANIFEST = (
    Column("image_uri", ("string",), True),
    Column("mask_uri", ("string",), False),
    *(Column(c, ("number", "string"), False) for c in BOX_COLUMNS),
    Column("reference_uri", ("string",), False),
    Column("split", ("string",), False),
)
SPLITS = ("train", "val")
MAX_LISTED = 5
# Why a row was skipped, as a small integer column (tensors carry no strings); 0 means the row is good.
SKIP_REASONS = (
    "",
    errors.FETCH_MISSING,
    errors.FETCH_ERROR,
    errors.DECODE_ERROR,
    errors.IMAGE_TOO_LARGE,
    errors.MASK_EMPTY,
    errors.MASK_OUT_OF_BOUNDS,
    errors.MASK_SIZE_MISMATCH,
    errors.INVALID_BOX,
    errors.INTERNAL_ERROR,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainManifest:
    train: pa.Table  # the TRAIN_MANIFEST columns, rows with split train (or null)
    val: pa.Table  # the same columns, rows with split val


def load_train_manifest(uri: str, s3: S3Config | None = None) -> TrainManifest:
    """Read and check the manifest; one ManifestError lists every problem."""
    problems: list[str] = []
    raw = read_manifest("training", uri, s3, problems)
    table = None
    if raw is not None and check_table("training", raw, TRAIN_MANIFEST, "", problems):
        table = contract_columns(raw, TRAIN_MANIFEST)
        _check_regions(table, problems)
        _check_splits(table, problems)
    if problems:
        raise ManifestError("the training manifest has problems:\n" + "\n".join(f"  - {p}" for p in problems))
    assert table is not None
    is_val = pc.fill_null(pc.equal(table.column("split"), "val"), False)
    manifest = TrainManifest(train=table.filter(pc.invert(is_val)), val=table.filter(is_val))
    if manifest.train.num_rows == 0:
        raise ManifestError(f"the training manifest {uri} has no train rows (all {table.num_rows} are split=val)")
    return manifest


def _rows(mask: pa.ChunkedArray) -> str:
    rows = np.flatnonzero(np.asarray(pc.fill_null(mask, False)))
    shown = ", ".join(str(r) for r in rows[:MAX_LISTED])
    return f"{len(rows)} rows (e.g. row {shown})"


def _check_regions(table: pa.Table, problems: list[str]) -> None:
    has_mask = pc.invert(pc.is_null(table.column("mask_uri")))
    has_box = pc.invert(pc.is_null(table.column("x0")))
    for c in BOX_COLUMNS[1:]:
        has_box = pc.and_(has_box, pc.invert(pc.is_null(table.column(c))))
    neither = pc.invert(pc.or_(has_mask, has_box))
    if pc.any(neither).as_py():
        problems.append(f"training manifest: {_rows(neither)} have neither mask_uri nor a full x0,y0,x1,y1 box")


def _check_splits(table: pa.Table, problems: list[str]) -> None:
    unknown = pc.invert(pc.is_in(table.column("split"), value_set=pa.array(SPLITS), skip_nulls=True))
    unknown = pc.and_(unknown, pc.invert(pc.is_null(table.column("split"))))
    if pc.any(unknown).as_py():
        values = sorted(set(table.filter(unknown).column("split").to_pylist()))[:MAX_LISTED]
        problems.append(f"training manifest: column 'split' must be train, val or null; {_rows(unknown)} hold "
                        f"{values}")


@dataclass(frozen=True)
class Schedule:
    """Which manifest row each sample of the run is, and which samples each worker takes."""

    rows: int  # train rows in the manifest
    seed: int
    batch_size: int  # per worker per micro-batch
    world_size: int

    def sample_of(self, rank: int, local: np.ndarray) -> np.ndarray:
        """Global sample index of worker `rank`'s local samples: micro-batch u is samples [u*W*B, (u+1)*W*B), of
        which the worker takes slice [r*B, (r+1)*B)."""
        b, w = self.batch_size, self.world_size
        return (local // b) * (w * b) + rank * b + local % b

    def epoch_row(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        epochs = samples // self.rows
        rows = np.empty_like(samples)
        for epoch in np.unique(epochs):
            where = epochs == epoch
            rows[where] = self.permutation(int(epoch))[samples[where] % self.rows]
        return epochs, rows

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows)


@dataclass(frozen=True)
class SampleDraws:
    """The per-sample randomness of the model side, drawn with the pair's augmentation, so a sample's noise,
    timestep and reference dropout do not depend on which worker or batch it lands in."""

    timestep_draw: float  # uniform in [0, 1): the worker maps it onto the model's training timesteps
    noise_seed: int
    drop_reference: bool


def sample_draws(seed: int, epoch: int, row: int, *, dropout: float) -> SampleDraws:
    rng = np.random.default_rng([seed, epoch, row, 1])  # a stream apart from the augmentation's
    return SampleDraws(
        timestep_draw=float(rng.uniform()),
        noise_seed=int(rng.integers(0, 2**62)),
        drop_reference=bool(rng.uniform() < dropout),
    )


def pair_from_row(
    row: dict[str, Any], *, rng: np.random.Generator, cfg: TrainDataConfig, s3: S3Config | None
) -> TrainPair:
    """Fetch a manifest row's images and build its pair; PairError on any bad input."""
    box = None if row.get("x0") is None else tuple(row[c] for c in BOX_COLUMNS)
    if row.get("mask_uri") is not None:
        box = None
    return make_pair(
        read_bytes(row["image_uri"], s3),
        mask_bytes=read_bytes(row["mask_uri"], s3) if row.get("mask_uri") is not None else None,
        box=box,
        reference_bytes=read_bytes(row["reference_uri"], s3) if row.get("reference_uri") is not None else None,
        rng=rng,
        cfg=cfg,
    )


def prepare_batch(
    batch: dict[str, np.ndarray],
    *,
    manifest: list,
    schedule: Schedule,
    rank: int,
    first_local: int,
    cfg: TrainDataConfig,
    s3: S3Config | None,
    dropout: float,
) -> dict[str, np.ndarray]:
    """Ray Data batch function: local sample ids (`id`) -> the pairs' arrays, one output row per input row.

    `manifest` is `[ObjectRef]` of the train table (a list, so Ray hands the function the reference, not a copy
    per call).
    """
    import ray

    table: pa.Table = ray.get(manifest[0])
    samples = schedule.sample_of(rank, np.asarray(batch["id"], dtype=np.int64) + first_local)
    epochs, rows = schedule.epoch_row(samples)
    res, ref = cfg.resolution, cfg.reference_size
    n = len(samples)
    out = {
        "sample": samples,
        "ok": np.zeros(n, bool),
        "reason": np.zeros(n, np.int64),  # index into SKIP_REASONS
        "scene": np.zeros((n, res, res, 3), np.uint8),
        "mask": np.zeros((n, res, res), np.uint8),
        "hint": np.zeros((n, res, res, 3), np.uint8),
        "reference": np.zeros((n, ref, ref, 3), np.uint8),
        "timestep_draw": np.zeros(n, np.float64),
        "noise_seed": np.zeros(n, np.int64),
        "drop_reference": np.zeros(n, bool),
    }
    for i, (epoch, row) in enumerate(zip(epochs.tolist(), rows.tolist(), strict=True)):
        draws = sample_draws(schedule.seed, epoch, row, dropout=dropout)
        out["timestep_draw"][i], out["noise_seed"][i], out["drop_reference"][i] = (
            draws.timestep_draw, draws.noise_seed, draws.drop_reference
        )
        try:
            pair = pair_from_row(
                table.slice(row, 1).to_pylist()[0], rng=pair_rng(schedule.seed, epoch, row), cfg=cfg, s3=s3
            )
        except PairError as exc:
            reason = exc.reason if exc.reason in SKIP_REASONS else errors.INTERNAL_ERROR
            out["reason"][i] = SKIP_REASONS.index(reason)
            continue
        except Exception:  # a bug or an unexpected input: this row is skipped, the traceback kept in the log
            log.warning("training row %d (epoch %d) failed unexpectedly; skipped", row, epoch, exc_info=True)
            out["reason"][i] = SKIP_REASONS.index(errors.INTERNAL_ERROR)
            continue
        out["ok"][i] = True
        out["scene"][i], out["mask"][i], out["hint"][i], out["reference"][i] = (
            pair.scene, pair.mask, pair.hint, pair.reference
        )
    return out


def dataset_name(rank: int) -> str:
    """The name of worker `rank`'s dataset (Ray Train's `datasets` key, not split between workers)."""
    return f"train_{rank}"


def rank_dataset(
    manifest_ref: Any,
    schedule: Schedule,
    *,
    rank: int,
    first_micro_batch: int,
    micro_batches: int,
    cfg: TrainDataConfig,
    s3: S3Config | None,
    dropout: float,
    cpus_per_task: float,
):
    """Worker `rank`'s samples from micro-batch `first_micro_batch` on, `micro_batches` of them, as a Ray Dataset:
    decoding and augmentation fan out over the cluster's CPUs and stream into the worker."""
    import ray

    b = schedule.batch_size
    ds = ray.data.range(micro_batches * b)
    return ds.map_batches(
        prepare_batch,
        batch_size=b,
        num_cpus=cpus_per_task,
        fn_kwargs={
            "manifest": [manifest_ref],
            "schedule": schedule,
            "rank": rank,
            "first_local": first_micro_batch * b,
            "cfg": cfg,
            "s3": s3,
            "dropout": dropout,
        },
    )


def validation_pairs(
    manifest: TrainManifest, *, count: int, seed: int, cfg: TrainDataConfig, s3: S3Config | None
) -> list[tuple[int, TrainPair]]:
    """The contact sheet's fixed pairs: split=val rows first, else the first train rows; bad rows are skipped.
    Returns (seed, pair) per pair: the seed the sampler draws its noise from, fixed for the whole run."""
    table = manifest.val if manifest.val.num_rows else manifest.train
    pairs = []
    for row, values in enumerate(table.to_pylist()):
        if len(pairs) == count:
            break
        try:
            pairs.append((seed + row, pair_from_row(values, rng=pair_rng(seed, 0, row), cfg=cfg, s3=s3)))
        except PairError:
            continue
    return pairs
