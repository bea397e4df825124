"""Evaluate a finished run: embed its images, score every pair, compare the variants, write `eval/`.

    eval/metrics.parquet   one row per metadata row (pair and variant) with the pair's keys, CLIP-I and DINO-I
    eval/summary.json      counts, per-variant means, FD-DINOv2, KID and FID against the real set (FID with the
                           resize convention it follows), the A/B table

Everything that can stop the job (the run not finished, an encoder source unusable) is checked before Ray Data
starts. A missing or unreadable image is that pair's `failed` evaluation row, counted in the summary.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import FETCH_MISSING, JobError
from pipeline.core.manifest_tables import BOX_COLUMNS
from pipeline.core.storage import filesystem, join, write_bytes
from pipeline.evaluate.ab import PairedDifference, format_table, paired_difference
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.embeddings import ITEM_SCHEMA, Embeddings, embed_items
from pipeline.evaluate.metrics import cosine_score, frechet_metric, kid_metric
from pipeline.evaluate.run_folder import FinishedRun, open_run
from pipeline.evaluate.weights import Preprocessing, check_source, describe

log = logging.getLogger(__name__)

# Per-pair scores: the metric's column, and the encoder it needs.
PAIR_METRICS = {"clip_i": "clip", "dino_i": "dinov2"}
# Per-variant scores against the real set: the summary's key, the encoder whose features it takes, and its estimator.
SET_METRICS: dict[str, tuple[str, Literal["frechet", "kid"]]] = {
    "fd_dinov2": ("dinov2", "frechet"), "kid_dinov2": ("dinov2", "kid"), "fid": ("inception", "frechet")}
METRICS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("product_id", pa.string()),
    ("scene_id", pa.string()),
    ("variant", pa.string()),
    ("seed", pa.int64()),
    ("status", pa.string()),  # the run's: ok | failed
    ("error_reason", pa.string()),
    ("image_key", pa.string()),  # the output image, relative to the run folder (null when the run made none)
    ("eval_status", pa.string()),  # ok | failed (an image missing or unreadable) | skipped (the run's row failed)
    ("eval_error_reason", pa.string()),
    ("eval_error_message", pa.string()),
    ("clip_i", pa.float64()),
    ("dino_i", pa.float64()),
])


@dataclass(frozen=True)
class Evaluation:
    metrics: pa.Table  # METRICS_SCHEMA
    summary: dict
    ab: list[PairedDifference]


class _Items:
    """The images to embed, each once: outputs, product references, real images; rows point into it by index."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._seen: dict[tuple, int] = {}

    def add(self, role: str, uri: str, crop: str = "whole", mask_uri: str | None = None,
            box: list[int] | None = None) -> int:
        key = (role, uri, crop, mask_uri, tuple(box) if box else None)
        if key not in self._seen:
            self._seen[key] = len(self.rows)
            self.rows.append({"item": len(self.rows), "role": role, "uri": uri, "crop": crop, "mask_uri": mask_uri,
                              "box": box})
        return self._seen[key]

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=ITEM_SCHEMA)


def _scene_regions(scenes: pa.Table) -> dict[str, dict]:
    """scene_id -> image_uri and the region as the manifest gives it (mask_uri, or a box of four integers)."""
    regions = {}
    for scene in scenes.to_pylist():
        box = [scene[c] for c in BOX_COLUMNS]
        regions[scene["scene_id"]] = {
            "uri": scene["image_uri"], "mask_uri": scene["mask_uri"],
            "box": None if scene["mask_uri"] or any(v is None for v in box) else [int(v) for v in box],
        }
    return regions


def _real_items(cfg: EvalConfig, items: _Items, scene_ids: list[str],
                regions: dict[str, dict]) -> tuple[list[int], str]:
    """The real set's items, and how the summary names it."""
    limit = cfg.real.max_images
    if cfg.real.uri is None:
        chosen = [items.add("real", regions[s]["uri"], "region", regions[s]["mask_uri"], regions[s]["box"])
                  for s in scene_ids[:limit]]
        return chosen, "the scenes' own regions (each scene of the run cut to its region)"
    fs, path = filesystem(cfg.real.uri, cfg.s3)
    try:
        uris = pq.read_table(path, filesystem=fs, columns=["image_uri"]).column("image_uri").to_pylist()
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise JobError(f"real.uri {cfg.real.uri}: not a Parquet manifest with an image_uri column: {exc}") from None
    return [items.add("real", uri) for uri in [u for u in uris if u][:limit]], cfg.real.uri


def _encoders(cfg: EvalConfig) -> dict[str, tuple[str, Preprocessing]]:
    sources = {"clip": cfg.encoders.clip, "dinov2": cfg.encoders.dinov2, "inception": cfg.encoders.inception}
    return {kind: (source, check_source(kind, source, cfg.s3)) for kind, source in sources.items() if source}


def _pair_items(run: FinishedRun, rows: list[dict], regions: dict[str, dict],
                items: _Items) -> tuple[list[tuple[int, int] | None], dict[int, str]]:
    """(output item, product item) per row, None where the run's row failed or the pair cannot be found again; and
    for the latter, by row, why."""
    catalogue = dict(zip(*(run.catalogue.column(c).to_pylist() for c in ("product_id", "image_uri")), strict=True))
    pair_items: list[tuple[int, int] | None] = []
    unmatched: dict[int, str] = {}
    for i, row in enumerate(rows):
        region = regions.get(row["scene_id"])
        product_uri = row["product_uri"] or catalogue.get(row["product_id"])
        if row["status"] == "ok" and region is None:
            unmatched[i] = f"scene {row['scene_id']!r} is not in the scenes manifest {run.config.scenes_uri}"
        elif row["status"] == "ok" and product_uri is None:
            unmatched[i] = f"product {row['product_id']!r} has no product image"
        if row["status"] != "ok" or i in unmatched:
            pair_items.append(None)
            continue
        pair_items.append((items.add("generated", run.image_uri(row), "region", region["mask_uri"], region["box"]),
                           items.add("reference", product_uri)))
    return pair_items, unmatched


def evaluate_run(cfg: EvalConfig) -> Evaluation:
    """Score the finished run at `cfg.run_folder` and write `eval/metrics.parquet` and `eval/summary.json`."""
    started = time.monotonic()
    run = open_run(cfg.run_uri, cfg.s3)
    encoders = _encoders(cfg)
    regions = _scene_regions(run.scenes)
    items = _Items()
    rows = run.rows.to_pylist()
    pair_items, unmatched = _pair_items(run, rows, regions, items)
    scene_ids = sorted({rows[i]["scene_id"] for i, p in enumerate(pair_items) if p is not None})
    real, real_source = _real_items(cfg, items, scene_ids, regions)

    log.info("evaluating %s: %d rows, %d images to embed with %s", run.uri, len(rows), len(items.rows),
             ", ".join(encoders))
    embeddings = embed_items(cfg, items.table(), encoders, max_pixels=run.config.image.max_pixels)
    metrics = _pair_metrics(run, rows, pair_items, unmatched, embeddings)
    per_variant = _per_variant(cfg, run, metrics, pair_items, real, embeddings)
    ab = _paired(cfg, run, metrics)
    summary = _summary(cfg, run, metrics, per_variant, ab, encoders, real, real_source, embeddings,
                       time.monotonic() - started)
    write_evaluation(cfg.run_uri, metrics, summary, cfg)
    return Evaluation(metrics=metrics, summary=summary, ab=ab)


def _pair_metrics(run: FinishedRun, rows: list[dict], pair_items: list[tuple[int, int] | None],
                  unmatched: dict[int, str], emb: Embeddings) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in METRICS_SCHEMA.names}
    ok = emb.ok()
    for i, (row, pair) in enumerate(zip(rows, pair_items, strict=True)):
        scores = dict.fromkeys(PAIR_METRICS)
        status, reason, message = "ok", None, None
        if row["status"] != "ok":
            status = "skipped"
        elif pair is None:
            status, reason, message = "failed", FETCH_MISSING, unmatched[i]
        else:
            out, ref = pair
            bad = [j for j in (out, ref) if not ok[j]]
            if bad:
                status, reason = "failed", emb.reason[bad[0]]
                message = f"{'output' if bad[0] == out else 'product'} image: {emb.message[bad[0]]}"
            else:
                for metric, kind in PAIR_METRICS.items():
                    if kind in emb.vectors:
                        scores[metric] = float(cosine_score(emb.vectors[kind][out], emb.vectors[kind][ref]))
        values = {
            "run_id": row["run_id"], "product_id": row["product_id"], "scene_id": row["scene_id"],
            "variant": row["variant"], "seed": row["seed"], "status": row["status"],
            "error_reason": row["error_reason"], "image_key": run.image_key(row) if row["status"] == "ok" else None,
            "eval_status": status, "eval_error_reason": reason, "eval_error_message": message, **scores,
        }
        for name in METRICS_SCHEMA.names:
            columns[name].append(values[name])
    return pa.table(columns, schema=METRICS_SCHEMA)


def _mean(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)) if values else None, "n": len(values)}


def _per_variant(cfg: EvalConfig, run: FinishedRun, metrics: pa.Table, pair_items: list[tuple[int, int] | None],
                 real: list[int], emb: Embeddings) -> dict[str, dict]:
    """Mean scores, and the set metrics of the variant's outputs against the real set: FD-DINOv2 and KID on DINOv2
    CLS features, FID on the FID Inception's, each where its encoder was given."""
    ok = emb.ok()
    usable_real = [j for j in real if ok[j]]
    variants = metrics.column("variant").to_pylist()
    scored = [s == "ok" for s in metrics.column("eval_status").to_pylist()]
    dist = cfg.distribution
    result = {}
    for variant in run.variants:
        rows = [i for i, v in enumerate(variants) if v == variant]
        entry: dict = {"rows": len(rows), "evaluated": sum(scored[i] for i in rows)}
        for metric, kind in PAIR_METRICS.items():
            if kind in emb.vectors:
                values = metrics.column(metric).take(rows).to_pylist()
                entry[metric] = _mean([v for v in values if v is not None])
        generated_items = [pair_items[i][0] for i in rows if scored[i]]
        for name, (kind, estimator) in SET_METRICS.items():
            if kind not in emb.vectors:
                continue
            generated, reals = emb.vectors[kind][generated_items], emb.vectors[kind][usable_real]
            metric = frechet_metric(name, generated, reals) if estimator == "frechet" else kid_metric(
                name, generated, reals, subset_size=dist.kid_subset_size, subsets=dist.kid_subsets, seed=dist.seed)
            entry[name] = metric.as_dict()
            if kind == "inception":  # which published convention the figure compares with
                entry[name]["resize"] = cfg.distribution.fid_resize
        result[variant] = entry
    return result


def pivot(metrics: pa.Table, metric: str, variants: list[str]) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The (product_id, scene_id) pairs and a (pairs, variants) array of `metric` (NaN where a variant has none)."""
    keys = sorted(set(zip(metrics.column("product_id").to_pylist(), metrics.column("scene_id").to_pylist(),
                          strict=True)))
    index = {k: i for i, k in enumerate(keys)}
    where = {v: j for j, v in enumerate(variants)}
    values = np.full((len(keys), len(variants)), np.nan)
    for p, s, v, x in zip(*(metrics.column(c).to_pylist() for c in ("product_id", "scene_id", "variant", metric)),
                          strict=True):
        if x is not None and v in where:
            values[index[(p, s)], where[v]] = x
    return keys, values


def _paired(cfg: EvalConfig, run: FinishedRun, metrics: pa.Table) -> list[PairedDifference]:
    variants = run.variants
    if len(variants) < 2:
        return []
    out = []
    for metric in PAIR_METRICS:
        if metrics.column(metric).null_count == metrics.num_rows:
            continue
        _, values = pivot(metrics, metric, variants)
        for j, variant in enumerate(variants[1:], start=1):
            out.append(paired_difference(metric, variant, variants[0], values[:, j], values[:, 0], test=cfg.ab.test,
                                         confidence=cfg.ab.confidence, resamples=cfg.ab.resamples, seed=cfg.ab.seed))
    return out


def _summary(cfg: EvalConfig, run: FinishedRun, metrics: pa.Table, per_variant: dict, ab: list[PairedDifference],
             encoders: dict, real: list[int], real_source: str, emb: Embeddings, wall_s: float) -> dict:
    statuses = Counter(metrics.column("eval_status").to_pylist())
    reasons = Counter(r for r in metrics.column("eval_error_reason").to_pylist() if r)
    ok = emb.ok()
    return {
        "run_id": run.config.run_id,
        "run_uri": run.uri,
        "encoders": {kind: describe(source) for kind, (source, _) in encoders.items()},
        "rows": metrics.num_rows,
        "by_eval_status": {s: statuses.get(s, 0) for s in ("ok", "failed", "skipped")},
        "by_eval_error_reason": dict(sorted(reasons.items())),
        "missing_images": reasons.get(FETCH_MISSING, 0),
        "real_set": {"source": real_source, "images": len(real), "usable": int(sum(ok[j] for j in real))},
        "variants": per_variant,
        "ab": {"baseline": run.variants[0], "test": cfg.ab.test, "confidence": cfg.ab.confidence,
               "differences": [d.as_dict() for d in ab]} if ab else None,
        "wall_s": round(wall_s, 3),
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config_hash": cfg.config_hash(),
    }


def write_evaluation(run_uri: str, metrics: pa.Table, summary: dict, cfg: EvalConfig) -> None:
    """metrics.parquet first, summary.json last: as for the run itself, the summary's presence means finished."""
    sink = io.BytesIO()
    pq.write_table(metrics, sink, compression="zstd")
    write_bytes(join(run_uri, "eval", "metrics.parquet"), sink.getvalue(), cfg.s3)
    write_bytes(join(run_uri, "eval", "summary.json"), json.dumps(summary, indent=2).encode(), cfg.s3)


def summary_lines(evaluation: Evaluation) -> str:
    """What the job prints at the end: the per-variant figures, then the A/B table."""
    lines = []
    for variant, entry in evaluation.summary["variants"].items():
        parts = [f"{variant}: {entry['evaluated']}/{entry['rows']} evaluated"]
        for metric in PAIR_METRICS:
            if metric in entry and entry[metric]["mean"] is not None:
                parts.append(f"{metric} {entry[metric]['mean']:.2f}")
        for name in SET_METRICS:
            if name in entry and entry[name]["value"] is not None:
                m = entry[name]
                flag = (", biased" if m["biased"] else "") + (f", {m['resize']} resize" if "resize" in m else "")
                parts.append(f"{name} {m['value']:.4g} (n={m['n_generated']} vs {m['n_real']}{flag})")
        lines.append("  ".join(parts))
    ab = evaluation.summary["ab"]
    if ab:
        lines += ["", f"paired differences vs {ab['baseline']} ({ab['test']} test, {ab['confidence']:.0%} bootstrap "
                      "interval):", format_table(evaluation.ab)]
    return "\n".join(lines)
