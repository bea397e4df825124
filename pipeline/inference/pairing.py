"""Which product goes into which scene, and with which seed.

Everything here is a pure function of the manifests and the configuration: the same inputs give the same pairs
and seeds on every run, whatever the manifests' row order, so reruns and A/B variants line up pair by pair.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

import pyarrow as pa

from pipeline.core.manifest_tables import BOX_COLUMNS
from pipeline.inference.config import PairingConfig
from pipeline.inference.keys import DEFAULT_VARIANT
from pipeline.inference.manifests import Manifests

PAIR_SCHEMA = pa.schema(
    [
        ("product_id", pa.string()),
        ("scene_id", pa.string()),
        ("variant", pa.string()),
        ("seed", pa.int64()),
        ("product_uri", pa.string()),
        ("scene_uri", pa.string()),
        ("mask_uri", pa.string()),
        # The box as the manifest wrote it ("x0,y0,x1,y1" text), parsed and checked per pair so one bad row fails
        # one pair, not the job.
        ("box", pa.string()),
        # The product's catalogue fields a prompt template may name (`pipeline.inference.prompts`).
        ("category", pa.string()),
        ("title", pa.string()),
    ]
)


def stable_hash(*parts: str) -> int:
    """A 64-bit hash of the parts that is the same in every process and on every run (unlike `hash()`)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def pair_seed(run_seed: int, product_id: str, scene_id: str) -> int:
    """Per-pair seed: independent of the variant, so every A/B variant draws the same noise for a pair."""
    return stable_hash(str(run_seed), product_id, scene_id) & 0x7FFFFFFF


def _pick_scenes(
    product_ids: list[str], product_categories: list[str | None], scenes_by_category: dict, config: PairingConfig
) -> list[tuple[str, str]]:
    pairs = []
    k = config.scenes_per_product
    for pid, category in zip(product_ids, product_categories, strict=True):
        candidates = scenes_by_category.get(category or "", [])
        if not candidates:
            continue
        if len(candidates) <= k:
            chosen = candidates
        else:
            rng = random.Random(stable_hash(config.salt, pid))
            chosen = rng.sample(candidates, k)
        pairs.extend((pid, sid) for sid in chosen)
    return pairs


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def make_pairs(manifests: Manifests, config: PairingConfig, run_seed: int) -> pa.Table:
    """The run's pairs with everything a worker needs to fetch them, in PAIR_SCHEMA."""
    catalogue, scenes = manifests.catalogue, manifests.scenes
    product_uri = dict(
        zip(catalogue.column("product_id").to_pylist(), catalogue.column("image_uri").to_pylist(), strict=True)
    )
    fields = {name: dict(zip(catalogue.column("product_id").to_pylist(), _column(catalogue, name), strict=True))
              for name in ("category", "title")}
    scene_rows = {row["scene_id"]: row for row in scenes.to_pylist()}

    variants: list[str]
    seeds: list[int | None]
    if config.strategy == "pairs":
        assert manifests.pairs is not None, "pairing strategy 'pairs' needs a pairs manifest"
        rows = manifests.pairs.to_pylist()
        ids = [(r["product_id"], r["scene_id"]) for r in rows]
        variants = [r["variant"] or DEFAULT_VARIANT for r in rows]
        seeds = [r["seed"] for r in rows]
    else:
        product_ids = catalogue.column("product_id").to_pylist()
        if config.strategy == "all":
            ids = [(pid, sid) for pid in product_ids for sid in sorted(scene_rows)]
        else:
            by_category: dict[str, list[str]] = defaultdict(list)
            for sid in sorted(scene_rows):
                by_category[scene_rows[sid]["category"] or ""].append(sid)
            ids = _pick_scenes(product_ids, catalogue.column("category").to_pylist(), by_category, config)
        variants = [DEFAULT_VARIANT] * len(ids)
        seeds = [None] * len(ids)

    columns: dict[str, list] = {name: [] for name in PAIR_SCHEMA.names}
    for (pid, sid), variant, seed in zip(ids, variants, seeds, strict=True):
        scene = scene_rows[sid]
        box = [scene[c] for c in BOX_COLUMNS]
        columns["product_id"].append(pid)
        columns["scene_id"].append(sid)
        columns["variant"].append(variant)
        columns["seed"].append(pair_seed(run_seed, pid, sid) if seed is None else int(seed))
        columns["product_uri"].append(product_uri[pid])
        columns["scene_uri"].append(scene["image_uri"])
        columns["mask_uri"].append(scene["mask_uri"])
        columns["box"].append(None if scene["mask_uri"] or any(v is None for v in box) else ",".join(map(str, box)))
        columns["category"].append(fields["category"][pid])
        columns["title"].append(fields["title"][pid])
    return pa.table(columns, schema=PAIR_SCHEMA)
