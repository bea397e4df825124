"""The review page's HTML: static files, no script, no server, nothing fetched from outside the run folder.

Every text from the run (ids, messages, variant names) is HTML-escaped; every link is a relative path built from the
run's own keys, each segment URL-quoted (the keys hold percent-escapes, which a browser would otherwise decode).
Sorting is a link to the same rows pre-rendered in that order, so it works from a local copy and from S3 alike.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from pipeline.inference.keys import escape_segment

METRIC_LABELS = {"clip_i": "CLIP-I", "dino_i": "DINO-I"}
SET_METRIC_LABELS = {"fd_dinov2": "FD-DINOv2", "kid_dinov2": "KID (DINOv2)", "fid": "FID"}
MAX_FAILURES_LISTED = 200  # per reason; the count says how many more


@dataclass(frozen=True)
class Cell:
    """One variant's result for one pair."""

    status: str  # ok | failed | absent (the variant did not compute this pair)
    message: str = ""
    thumb: str | None = None  # relative to report/, when the thumbnail was written
    image: str | None = None  # relative to the run folder
    scores: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class PairView:
    product_id: str
    scene_id: str
    seed: int | None
    scene_thumb: str | None
    product_thumb: str | None
    cells: dict[str, Cell]
    diffs: dict[tuple[str, str], float | None]  # (metric, variant) -> variant minus the first variant


@dataclass(frozen=True)
class Order:
    slug: str
    label: str
    key: Callable[[PairView], float | None]  # None sorts last


@dataclass(frozen=True)
class PageContext:
    title: str
    variants: list[str]
    metrics: list[str]
    orders: list[Order]
    summary_html: str  # shown on the first page only
    failures_html: str


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def href(path: str) -> str:
    """A relative URL for a key path: each segment quoted, then escaped for the attribute."""
    return e("/".join(quote(segment, safe="") for segment in path.split("/")))


def orders_for(variants: list[str], metrics: list[str]) -> list[Order]:
    """Sort orders: as listed, then each metric per variant and each A/B difference, worst (lowest) first."""
    orders = [Order("pairs", "product, scene", lambda p: None)]
    for metric in metrics:
        for variant in variants:
            orders.append(Order(f"{metric}.{variant}", f"{METRIC_LABELS[metric]} {variant}",
                                lambda p, m=metric, v=variant: p.cells[v].scores.get(m) if v in p.cells else None))
    for metric in metrics:
        for variant in variants[1:]:
            orders.append(Order(f"diff.{metric}.{variant}", f"Δ {METRIC_LABELS[metric]} {variant} − {variants[0]}",
                                lambda p, m=metric, v=variant: p.diffs.get((m, v))))
    return orders


def sorted_pairs(pairs: list[PairView], order: Order) -> list[PairView]:
    """Ascending by the order's key (worst first), pairs without a value last, ties in listing order."""
    def key(pair: PairView) -> tuple[bool, float]:
        value = order.key(pair)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return missing, 0.0 if missing else value

    return pairs if order.slug == "pairs" else sorted(pairs, key=key)


def page_name(order: Order, number: int) -> str:
    return "index.html" if order.slug == "pairs" and number == 1 else f"{escape_segment(order.slug)}-{number}.html"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def _thumb(key: str | None, link: str | None, alt: str, missing: str) -> str:
    if key is None:
        return f'<div class="nothumb">{e(missing)}</div>'
    img = f'<img src="{href(key)}" alt="{e(alt)}" loading="lazy">'
    return f'<a href="{href(link)}">{img}</a>' if link else img


def _cell(cell: Cell | None, metrics: list[str]) -> str:
    if cell is None or cell.status == "absent":
        return '<td class="out absent">not in this variant</td>'
    if cell.status != "ok":
        return f'<td class="out failed"><div class="reason">failed</div><div class="msg">{e(cell.message)}</div></td>'
    thumb = _thumb(cell.thumb, f"../{cell.image}" if cell.image else None, "output",
                   f"no thumbnail: {cell.message}" if cell.message else "no thumbnail")
    scores = " ".join(f'<span class="score">{METRIC_LABELS[m]} {_num(cell.scores.get(m))}</span>' for m in metrics)
    return f'<td class="out">{thumb}<div class="scores">{scores}</div></td>'


def _row(index: int, pair: PairView, ctx: PageContext) -> str:
    cells = "".join(_cell(pair.cells.get(v), ctx.metrics) for v in ctx.variants)
    diffs = ""
    if len(ctx.variants) > 1:
        items = []
        for (metric, variant), value in pair.diffs.items():
            cls = "none" if value is None else "neg" if value < 0 else "pos"
            items.append(f'<div class="{cls}">Δ{METRIC_LABELS[metric]} {e(variant)} {_num(value, "+.2f")}</div>')
        diffs = f'<td class="diffs">{"".join(items)}</td>'
    return (
        f'<tr class="pair" data-pair="{e(pair.product_id)} / {e(pair.scene_id)}">'
        f'<td class="n">{index}</td>'
        f'<td class="scene">{_thumb(pair.scene_thumb, None, "scene", "no scene thumbnail")}'
        f'<div class="id">{e(pair.scene_id)}</div></td>'
        f'<td class="product">{_thumb(pair.product_thumb, None, "product", "no product thumbnail")}'
        f'<div class="id">{e(pair.product_id)}</div><div class="seed">seed {e(pair.seed)}</div></td>'
        f"{cells}{diffs}</tr>"
    )


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}
th{background:#f3f3f3}img{display:block;max-width:192px;max-height:192px}
.nothumb{width:120px;color:#a00;font-size:12px}.id{font-family:monospace;word-break:break-all;max-width:192px}
.failed{background:#fff1f1}.absent{color:#999}.msg{font-size:12px;max-width:220px;word-break:break-word}
.neg{color:#b00}.pos{color:#070}.none{color:#999}
nav a{margin-right:.6em}nav a.current{font-weight:bold;text-decoration:none}
.score{margin-right:.5em}.summary td,.summary th{font-size:12px}section{margin:0 1.5em 1em 0}
.top{display:flex;flex-wrap:wrap;align-items:flex-start}h2{font-size:16px;margin:.3em 0}h1{font-size:22px}
"""


def render_page(ctx: PageContext, order: Order, number: int, pages: int, rows: list[PairView], first: int) -> str:
    """One page of rows in `order`; the first page of the listing order also holds the summary and the failures."""
    sort_links = " ".join(
        f'<a class="sort{" current" if o.slug == order.slug else ""}" href="{href(page_name(o, 1))}">{e(o.label)}</a>'
        for o in ctx.orders)
    pager = " ".join(
        f'<a class="page{" current" if k == number else ""}" href="{href(page_name(order, k))}">{k}</a>'
        for k in range(1, pages + 1))
    head = "".join(f"<th>{e(v)}</th>" for v in ctx.variants) + ("<th>A/B</th>" if len(ctx.variants) > 1 else "")
    body = "".join(_row(first + i, pair, ctx) for i, pair in enumerate(rows))
    top = ctx.summary_html + ctx.failures_html if order.slug == "pairs" and number == 1 else (
        '<p><a href="index.html">summary and failed pairs</a></p>')
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(ctx.title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{e(ctx.title)}</h1>{top}"
        f'<nav class="sorts">sort (worst first): {sort_links}</nav>'
        f'<nav class="pages">page: {pager}</nav>'
        f'<p class="order">{e(order.label)}, page {number} of {pages}</p>'
        f'<table class="pairs"><thead><tr><th>#</th><th>scene</th><th>product</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></body></html>"
    )


def render_pages(ctx: PageContext, pairs: list[PairView], rows_per_page: int) -> dict[str, str]:
    """Every page of every order, by file name under report/."""
    pages = max(1, math.ceil(len(pairs) / rows_per_page))
    out = {}
    for order in ctx.orders:
        ordered = sorted_pairs(pairs, order)
        for number in range(1, pages + 1):
            start = (number - 1) * rows_per_page
            out[page_name(order, number)] = render_page(ctx, order, number, pages,
                                                        ordered[start:start + rows_per_page], start + 1)
    return out


def table_html(caption: str, header: list[str] | None, rows: list[list[object]]) -> str:
    """A small table of the summary; without a header, a list of name and value rows."""
    head = "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<section><h2>{e(caption)}</h2><table class="summary">{head}{body}</table></section>'


def failures_html(failures: dict[str, list[tuple[str, str, str, str]]]) -> str:
    """Failed pairs grouped by reason, most frequent first: (product, scene, variant, message) each."""
    if not failures:
        return "<section><h2>Failed pairs</h2><p>none</p></section>"
    parts = ["<section><h2>Failed pairs</h2>"]
    for reason, items in sorted(failures.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        parts.append(f'<details class="reason" open><summary>{e(reason)}: {len(items)}</summary><ul>')
        for product, scene, variant, message in items[:MAX_FAILURES_LISTED]:
            parts.append(f"<li><code>{e(product)}</code> / <code>{e(scene)}</code> ({e(variant)}): {e(message)}</li>")
        if len(items) > MAX_FAILURES_LISTED:
            parts.append(f"<li>and {len(items) - MAX_FAILURES_LISTED} more</li>")
        parts.append("</ul></details>")
    parts.append("</section>")
    return "".join(parts)
