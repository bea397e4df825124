"""The review page's HTML: static files, no script, no server, nothing fetched from outside the run folder.

Every text from the run (ids, messages, variant names, prompts) is HTML-escaped; every link is a relative path built
from the run's own keys, each segment URL-quoted (the keys hold percent-escapes, which a browser would otherwise
decode). Sorting is a link to the same rows pre-rendered in that order, so it works from a local copy and from S3
alike: the listing order in full, every other order only its worst pages (a catalogue-sized run would otherwise
repeat every row once per order).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from pipeline.inference.keys import escape_segment

METRIC_LABELS = {"clip_i": "CLIP-I", "dino_i": "DINO-I"}
SET_METRIC_LABELS = {"fd_dinov2": "FD-DINOv2", "kid_dinov2": "KID (DINOv2)", "fid": "FID"}
MAX_FAILURES_LISTED = 200  # per reason; the count says how many more
PAGER_REACH = 5  # the pager links pages within 5, 50, 500, ... of the current one, at steps of 1, 10, 100, ...


@dataclass(frozen=True)
class Quality:
    """The inference job's own checks of one output, from its metadata row (a run older than them has None)."""

    seam_delta_e: float | None = None  # mean CIEDE2000 at the paste-back seam
    region_delta_e: float | None = None
    outside_changed_px: int | None = None
    flags: tuple[str, ...] = ()
    attempts: int | None = None
    model_family: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class Cell:
    """One variant's result for one pair."""

    status: str  # ok | failed | absent (the variant did not compute this pair)
    message: str = ""
    thumb: str | None = None  # relative to report/, when the thumbnail was written
    image: str | None = None  # relative to the run folder
    scores: dict[str, float | None] = field(default_factory=dict)
    quality: Quality = Quality()


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
    high_is_worse: bool = False  # worst first: descending


LISTING = Order("pairs", "product, scene", lambda p: None)


def is_listing(order: Order) -> bool:
    return order.slug == LISTING.slug


@dataclass(frozen=True)
class PageContext:
    title: str
    variants: list[str]
    metrics: list[str]
    orders: list[Order]
    summary_html: str  # shown on the first page only
    failures_html: str
    families: dict[str, str] = field(default_factory=dict)  # variant -> the model family all its rows share


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def href(path: str) -> str:
    """A relative URL for a key path: each segment quoted, then escaped for the attribute."""
    return e("/".join(quote(segment, safe="") for segment in path.split("/")))


def _seam(pair: PairView, variant: str) -> float | None:
    cell = pair.cells.get(variant)
    return None if cell is None else cell.quality.seam_delta_e


def orders_for(variants: list[str], metrics: list[str], *, seam: bool = False) -> list[Order]:
    """Sort orders: as listed; with `seam`, each variant's seam ΔE, worst (highest) first; then each metric per variant
    and each A/B difference, worst (lowest) first."""
    orders = [LISTING]
    if seam:
        orders += [Order(f"seam_delta_e.{v}", f"seam ΔE {v}", lambda p, v=v: _seam(p, v), high_is_worse=True)
                   for v in variants]
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
    """Worst first by the order's key, pairs without a value last, ties in listing order."""
    sign = -1.0 if order.high_is_worse else 1.0

    def key(pair: PairView) -> tuple[bool, float]:
        value = order.key(pair)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return missing, 0.0 if missing else sign * value

    return pairs if is_listing(order) else sorted(pairs, key=key)


def page_name(order: Order, number: int) -> str:
    return "index.html" if is_listing(order) and number == 1 else f"{escape_segment(order.slug)}-{number}.html"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def pager_numbers(current: int, pages: int) -> list[int]:
    """The pages a page links: the first, the last, and at each step of 1, 10, 100, ... the multiples of it within
    PAGER_REACH steps of `current`, so any page is a few clicks away and a page's links stay few."""
    shown = {1, pages}
    step = 1
    while step < pages:
        low, high = max(1, current - PAGER_REACH * step), min(pages, current + PAGER_REACH * step)
        shown.update(range(-(-low // step) * step, high + 1, step))
        step *= 10
    return sorted(shown)


def _thumb(key: str | None, link: str | None, alt: str, missing: str) -> str:
    if key is None:
        return f'<div class="nothumb">{e(missing)}</div>'
    img = f'<img src="{href(key)}" alt="{e(alt)}" loading="lazy">'
    return f'<a href="{href(link)}">{img}</a>' if link else img


def _quality(q: Quality, family: str | None) -> str:
    """The inference job's checks of one output (nothing for a run without them); the model family where it is not
    the variant's one (`family`, shown in the column's head)."""
    figures = [f"{label} {value:.2f}" for label, value in (("seam ΔE", q.seam_delta_e),
                                                           ("region ΔE", q.region_delta_e)) if value is not None]
    if q.outside_changed_px is not None:
        figures.append(f"outside changed {q.outside_changed_px} px")
    if q.attempts is not None:
        figures.append(f"attempts {q.attempts}")
    if q.model_family and q.model_family != family:
        figures.append(q.model_family)
    parts = [f'<div class="q">{e(" · ".join(figures))}</div>'] if figures else []
    if q.flags:
        parts.append('<div class="flags">' + "".join(f'<span class="flag">{e(f)}</span>' for f in q.flags) + "</div>")
    if q.prompt:
        parts.append(f'<div class="prompt">{e(q.prompt)}</div>')
    return "".join(parts)


def _cell(cell: Cell | None, metrics: list[str], family: str | None) -> str:
    if cell is None or cell.status == "absent":
        return '<td class="out absent">not in this variant</td>'
    quality = _quality(cell.quality, family)
    if cell.status != "ok":
        return (f'<td class="out failed"><div class="reason">failed</div><div class="msg">{e(cell.message)}</div>'
                f"{quality}</td>")
    thumb = _thumb(cell.thumb, f"../{cell.image}" if cell.image else None, "output",
                   f"no thumbnail: {cell.message}" if cell.message else "no thumbnail")
    scores = " ".join(f'<span class="score">{METRIC_LABELS[m]} {_num(cell.scores.get(m))}</span>' for m in metrics)
    return f'<td class="out">{thumb}<div class="scores">{scores}</div>{quality}</td>'


def _row(index: int, pair: PairView, ctx: PageContext) -> str:
    cells = "".join(_cell(pair.cells.get(v), ctx.metrics, ctx.families.get(v)) for v in ctx.variants)
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
.score{margin-right:.5em}.q{font-size:12px;color:#444}.family{font-weight:normal;font-size:12px;color:#555}
.flag{background:#fdd;color:#900;font-size:11px;padding:0 3px;margin-right:3px}
.prompt{font-size:11px;color:#555;max-width:220px;max-height:4.5em;overflow:auto}.gap{margin-right:.6em}
.summary td,.summary th{font-size:12px}section{margin:0 1.5em 1em 0}
.top{display:flex;flex-wrap:wrap;align-items:flex-start}h2{font-size:16px;margin:.3em 0}h1{font-size:22px}
"""


def _pager(order: Order, number: int, pages: int) -> str:
    links, last = [], 0
    for k in pager_numbers(number, pages):
        if k > last + 1:
            links.append('<span class="gap">…</span>')
        links.append(f'<a class="page{" current" if k == number else ""}" href="{href(page_name(order, k))}">{k}</a>')
        last = k
    return " ".join(links)


def _variant_head(variant: str, family: str | None) -> str:
    return f"<th>{e(variant)}" + (f' <span class="family">{e(family)}</span>' if family else "") + "</th>"


def render_page(ctx: PageContext, order: Order, number: int, pages: int, rows: list[PairView], first: int,
                shown: str) -> str:
    """One page of rows in `order` (`shown` says which of its pairs it has pages for); the first page of the listing
    order also holds the summary and the failures."""
    sort_links = " ".join(
        f'<a class="sort{" current" if o.slug == order.slug else ""}" href="{href(page_name(o, 1))}">{e(o.label)}</a>'
        for o in ctx.orders)
    head = "".join(_variant_head(v, ctx.families.get(v)) for v in ctx.variants)
    head += "<th>A/B</th>" if len(ctx.variants) > 1 else ""
    body = "".join(_row(first + i, pair, ctx) for i, pair in enumerate(rows))
    top = ctx.summary_html + ctx.failures_html if is_listing(order) and number == 1 else (
        '<p><a href="index.html">summary and failed pairs</a></p>')
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(ctx.title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{e(ctx.title)}</h1>{top}"
        f'<nav class="sorts">sort (worst first): {sort_links}</nav>'
        f'<nav class="pages">page: {_pager(order, number, pages)}</nav>'
        f'<p class="order">{e(order.label)}, page {number} of {pages}{e(shown)}</p>'
        f'<table class="pairs"><thead><tr><th>#</th><th>scene</th><th>product</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></body></html>"
    )


def render_pages(ctx: PageContext, pairs: list[PairView], rows_per_page: int,
                 sorted_pages: int) -> Iterator[tuple[str, str]]:
    """(file name under report/, HTML) of every page: the listing order's all, each other order's first (worst)
    `sorted_pages` (none: the listing order alone). A page at a time: a catalogue-sized run is never held as HTML."""
    if sorted_pages == 0:
        ctx = replace(ctx, orders=[LISTING])
    every = max(1, math.ceil(len(pairs) / rows_per_page))
    for order in ctx.orders:
        pages = every if is_listing(order) else min(every, sorted_pages)
        kept = min(len(pairs), pages * rows_per_page)
        shown = "" if kept == len(pairs) else f" (its worst {kept} of {len(pairs)} pairs)"
        ordered = sorted_pairs(pairs, order)
        for number in range(1, pages + 1):
            start = (number - 1) * rows_per_page
            yield page_name(order, number), render_page(ctx, order, number, pages,
                                                        ordered[start:start + rows_per_page], start + 1, shown)


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
