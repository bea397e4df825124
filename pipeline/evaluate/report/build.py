"""`write_report`: the review page of a finished run, `report/index.html` and its other pages and thumbnails.

Reads the run folder (and `eval/` when the run was evaluated: the page then shows the scores and A/B differences);
writes only under `report/`, and leaves there no page of an earlier build that this one does not link. The pages
link to the run's full images by their relative keys, so the folder can be opened from a local copy or served from a
bucket as it is.
"""

from __future__ import annotations

import io
import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow.parquet as pq

from pipeline.core.errors import PairError
from pipeline.core.manifest_tables import BOX_COLUMNS
from pipeline.core.storage import S3Config, filesystem, join, read_bytes, write_bytes
from pipeline.evaluate.config import ReportConfig
from pipeline.evaluate.crops import FID_RESIZE_LABELS
from pipeline.evaluate.evaluation import PAIR_METRICS, SET_METRICS
from pipeline.evaluate.report.page import (
    METRIC_LABELS,
    SET_METRIC_LABELS,
    Cell,
    PageContext,
    PairView,
    Quality,
    failures_html,
    orders_for,
    render_pages,
    table_html,
)
from pipeline.evaluate.report.thumbnails import output_key, product_key, scene_key, write_thumbnails
from pipeline.evaluate.run_folder import FinishedRun, open_run

log = logging.getLogger(__name__)

HTML = "text/html; charset=utf-8"


@dataclass(frozen=True)
class ReportResult:
    index_uri: str
    pages: int
    thumbnails: int
    thumbnails_failed: int


def _evaluation(run: FinishedRun, s3: S3Config | None) -> tuple[dict | None, dict[tuple, dict]]:
    """eval/summary.json and the scores by (product, scene, variant), when the run was evaluated."""
    try:
        summary = json.loads(read_bytes(join(run.uri, "eval", "summary.json"), s3))
        metrics = pq.read_table(io.BytesIO(read_bytes(join(run.uri, "eval", "metrics.parquet"), s3)))
    except PairError:
        return None, {}
    scores = {(r["product_id"], r["scene_id"], r["variant"]): r for r in metrics.to_pylist()}
    return summary, scores


def _run_summary_html(run: FinishedRun) -> str:
    s = run.summary
    rows = [["run", run.config.run_id], ["pairs (rows)", s.get("pairs")],
            ["ok", s.get("by_status", {}).get("ok")], ["failed", s.get("by_status", {}).get("failed")],
            ["variants", ", ".join(run.variants)], ["finished at", s.get("finished_at")]]
    attempt = s.get("this_attempt") or {}
    rows += [[f"last attempt: {k}", v] for k, v in attempt.items()]
    rows += [[f"cost: {k}", v] for k, v in (s.get("cost") or {}).items()]
    return table_html("Run", None, rows)


def _eval_summary_html(summary: dict | None, metrics: list[str]) -> str:
    if summary is None:
        return "<section><h2>Evaluation</h2><p>not evaluated (run jobs.evaluate for scores)</p></section>"
    header = ["variant", "evaluated", *[METRIC_LABELS[m] + " mean" for m in metrics],
              *[SET_METRIC_LABELS[m] for m in SET_METRICS]]
    rows, resizes = [], set()
    for variant, entry in summary["variants"].items():
        row: list[object] = [variant, f"{entry['evaluated']} of {entry['rows']}"]
        row += [_mean(entry.get(m)) for m in metrics]
        for name in SET_METRICS:
            m = entry.get(name)
            row.append("–" if not m or m["value"] is None else
                       f"{m['value']:.4g} (n={m['n_generated']} vs {m['n_real']}{', biased' if m['biased'] else ''})")
            resizes.add(m.get("resize") if m else None)
        rows.append(row)
    parts = [table_html("Evaluation", header, rows)]
    encoders = "; ".join(f"{k}: {v}" for k, v in summary["encoders"].items())
    parts.append(table_html("Evaluated with", None, [
        ["encoders", encoders], ["real set", f"{summary['real_set']['source']} ({summary['real_set']['usable']} "
                                             "images)"],
        ["missing images", summary["missing_images"]],
        *[["FID inputs", f"299 px by {FID_RESIZE_LABELS.get(r, r)}"] for r in sorted(resizes - {None})]]))
    ab = summary.get("ab")
    if ab:
        parts.append(table_html(
            f"A/B, paired, against {ab['baseline']} ({ab['test']} test, {ab['confidence']:.0%} bootstrap interval)",
            ["metric", "variant", "pairs", "mean difference", "interval", "p"],
            [[METRIC_LABELS[d["metric"]], d["variant"], d["n"], _num(d["mean_difference"], "+.3f"),
              "–" if d["ci_low"] is None else f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]", _num(d["p_value"], ".4f")]
             for d in ab["differences"]]))
    return "".join(parts)


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _mean(entry: dict | None) -> str:
    return "–" if not entry or entry["mean"] is None else f"{entry['mean']:.2f} (n={entry['n']})"


def _thumbnail_tasks(run: FinishedRun, by_pair: dict[tuple[str, str], dict[str, dict]]) -> list[dict]:
    """One task per thumbnail: each output image, each scene (region outlined), each product."""
    scenes = {s["scene_id"]: s for s in run.scenes.to_pylist()}
    catalogue = dict(zip(*(run.catalogue.column(c).to_pylist() for c in ("product_id", "image_uri")), strict=True))
    tasks = []
    for (product_id, scene_id), variants in by_pair.items():
        for row in variants.values():
            if row["status"] == "ok":
                tasks.append({"key": output_key(run.image_key(row)), "uri": run.image_uri(row), "mask_uri": None,
                              "box": None, "outline": False})
        scene = scenes.get(scene_id)
        if scene is not None:
            box = [scene[c] for c in BOX_COLUMNS]
            tasks.append({"key": scene_key(scene_id), "uri": scene["image_uri"], "mask_uri": scene["mask_uri"],
                          "box": None if scene["mask_uri"] or None in box else [int(v) for v in box],
                          "outline": True})
        product_uri = next((r["product_uri"] for r in variants.values() if r["product_uri"]),
                           catalogue.get(product_id))
        if product_uri:
            tasks.append({"key": product_key(product_id), "uri": product_uri, "mask_uri": None, "box": None,
                          "outline": False})
    return tasks


def quality_of(row: dict) -> Quality:
    """The inference job's checks of one output, as its metadata row holds them (a run older than them has none)."""
    flags = row.get("quality_flags")
    return Quality(seam_delta_e=row.get("seam_delta_e"), region_delta_e=row.get("region_delta_e"),
                   outside_changed_px=row.get("outside_changed_px"), flags=tuple(flags or ()),
                   attempts=row.get("attempts"), model_family=row.get("model_family"), prompt=row.get("prompt"))


def _families(rows: list[dict], variants: list[str]) -> dict[str, str]:
    """variant -> its model family, where all its rows that name one name the same."""
    seen: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.get("model_family"):
            seen[row["variant"]].add(row["model_family"])
    return {v: next(iter(seen[v])) for v in variants if len(seen[v]) == 1}


def _cells(run: FinishedRun, product_id: str, scene_id: str, variants: dict[str, dict], scores: dict[tuple, dict],
           metrics: list[str], thumbs: dict[str, str], failures: dict[str, list]) -> dict[str, Cell]:
    """Each variant's cell of one pair; failed rows and failed evaluations go to `failures` by reason."""
    cells = {}
    for variant, row in variants.items():
        if row["status"] != "ok":
            failures[row["error_reason"] or "unknown"].append((product_id, scene_id, variant,
                                                               row["error_message"] or ""))
            cells[variant] = Cell("failed", f"{row['error_reason']}: {row['error_message'] or ''}",
                                  quality=quality_of(row))
            continue
        score = scores.get((product_id, scene_id, variant), {})
        if score.get("eval_status") == "failed":
            failures[f"evaluation: {score['eval_error_reason']}"].append(
                (product_id, scene_id, variant, score["eval_error_message"] or ""))
        key = output_key(run.image_key(row))
        problem = thumbs.get(key, "no thumbnail")
        cells[variant] = Cell("ok", problem, None if problem else key, run.image_key(row),
                              {m: score.get(m) for m in metrics}, quality_of(row))
    for variant in run.variants:
        cells.setdefault(variant, Cell("absent"))
    return cells


def _differences(cells: dict[str, Cell], variants: list[str],
                 metrics: list[str]) -> dict[tuple[str, str], float | None]:
    """Each later variant's score minus the first variant's, per metric (None unless both have one)."""
    base = cells[variants[0]].scores
    diffs = {}
    for metric in metrics:
        for variant in variants[1:]:
            a, b = base.get(metric), cells[variant].scores.get(metric)
            diffs[(metric, variant)] = None if a is None or b is None else b - a
    return diffs


def write_pages(report_uri: str, pages: Iterable[tuple[str, str]], s3: S3Config | None) -> int:
    """The pages as text/html (so a bucket serves them as pages), index.html last: when it is there, all are. Then
    the pages of an earlier build that this one no longer has are removed. Returns how many were written."""
    written, index = set(), None
    for name, page in pages:
        if name == "index.html":
            index = page
            continue
        write_bytes(join(report_uri, name), page.encode(), s3, content_type=HTML)
        written.add(name)
    if index is not None:
        write_bytes(join(report_uri, "index.html"), index.encode(), s3, content_type=HTML)
        written.add("index.html")
    fs, path = filesystem(report_uri, s3)
    fs.invalidate_cache(path)
    stale = [f for f in fs.ls(path, detail=False) if f.endswith(".html") and f.rpartition("/")[2] not in written]
    if stale:
        fs.rm(stale)
    return len(written)


def write_report(run_uri: str, settings: ReportConfig, s3: S3Config | None = None) -> ReportResult:
    """Write `report/` of the finished run at `run_uri`; returns where its first page is."""
    run = open_run(run_uri, s3)
    summary, scores = _evaluation(run, s3)
    metrics = [m for m in PAIR_METRICS if any(r.get(m) is not None for r in scores.values())]
    report_uri = join(run.uri, "report")
    by_pair: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    rows = run.rows.to_pylist()
    for row in rows:
        by_pair[(row["product_id"], row["scene_id"])][row["variant"]] = row
    thumbs = write_thumbnails(_thumbnail_tasks(run, by_pair), report_uri, px=settings.thumbnail_px,
                              max_pixels=run.config.image.max_pixels, s3=s3)

    pairs, failures = [], defaultdict(list)
    for (product_id, scene_id), variants in by_pair.items():
        cells = _cells(run, product_id, scene_id, variants, scores, metrics, thumbs, failures)
        seed = next(iter(variants.values()))["seed"]
        scene_thumb, product_thumb = scene_key(scene_id), product_key(product_id)
        pairs.append(PairView(product_id, scene_id, seed, scene_thumb if thumbs.get(scene_thumb) == "" else None,
                              product_thumb if thumbs.get(product_thumb) == "" else None, cells,
                              _differences(cells, run.variants, metrics)))

    top = f'<div class="top">{_run_summary_html(run)}{_eval_summary_html(summary, metrics)}</div>'
    seam = any(c.quality.seam_delta_e is not None for pair in pairs for c in pair.cells.values())
    ctx = PageContext(title=f"tryall run {run.config.run_id}", variants=run.variants, metrics=metrics,
                      orders=orders_for(run.variants, metrics, seam=seam), summary_html=top,
                      failures_html=failures_html(dict(failures)), families=_families(rows, run.variants))
    pages = write_pages(report_uri, render_pages(ctx, pairs, settings.rows_per_page, settings.sorted_pages), s3)
    failed = sum(1 for problem in thumbs.values() if problem)
    log.info("review page %s: %d pairs, %d pages, %d thumbnails (%d could not be made)",
             join(report_uri, "index.html"), len(pairs), pages, len(thumbs), failed)
    return ReportResult(join(report_uri, "index.html"), pages, len(thumbs), failed)
