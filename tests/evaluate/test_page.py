"""The page's HTML on its own: ids are data (escaped, quoted in links), sorting puts the worst first, pages split,
only the worst pages of each sort but the listing order are written, the inference job's quality columns shown where
a run has them; the pager stays short; stale pages are removed; the scene thumbnail's outline lies on the region's
edge."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from pipeline.core import storage
from pipeline.evaluate.report.build import write_pages
from pipeline.evaluate.report.page import (
    Cell,
    PageContext,
    PairView,
    Quality,
    failures_html,
    orders_for,
    pager_numbers,
    render_pages,
)
from pipeline.evaluate.report.thumbnails import OUTLINE, outline_region, output_key, scene_key

NASTY = '<script>alert("x")</script> & a/b%20'


def _pair(product: str, scene: str, a: float | None, b: float | None, seam_a: float | None = None,
          seam_b: float | None = None) -> PairView:
    cells = {"a": Cell("ok", thumb=f"thumbs/images/a/{product}.jpg", image=f"images/a/{product}.png",
                       scores={"clip_i": a}, quality=Quality(seam_delta_e=seam_a)),
             "b": Cell("ok", thumb=None, image=None, message="fetch_missing: gone", scores={"clip_i": b},
                       quality=Quality(seam_delta_e=seam_b))}
    diff = None if a is None or b is None else b - a
    return PairView(product, scene, 7, None, None, cells, {("clip_i", "b"): diff})


def _context(pairs_failures=None, seam: bool = False, families=None) -> PageContext:
    return PageContext(title=NASTY, variants=["a", "b"], metrics=["clip_i"],
                       orders=orders_for(["a", "b"], ["clip_i"], seam=seam), summary_html="<p>summary</p>",
                       failures_html=failures_html(pairs_failures or {}), families=families or {})


def _render(ctx: PageContext, pairs: list[PairView], rows_per_page: int, sorted_pages: int = 100) -> dict[str, str]:
    return dict(render_pages(ctx, pairs, rows_per_page, sorted_pages))


def test_ids_and_messages_are_escaped_and_links_quoted():
    pages = _render(_context({"decode_error": [(NASTY, "room", "a", "bad <b>bytes</b>")]}),
                    [_pair(NASTY, "room%2F1", 80.0, 81.0)], rows_per_page=10)
    html = pages["index.html"]
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a/b%20" in html
    assert "bad &lt;b&gt;bytes&lt;/b&gt;" in html
    # The link's path is quoted segment by segment: the id's '%' stays a '%' in the file name the browser opens.
    assert 'href="../images/a/%3Cscript%3Ealert%28%22x%22%29%3C/script%3E%20%26%20a/b%2520.png"' in html
    assert 'data-pair="&lt;script&gt;' in html


def test_sorting_is_worst_first_with_missing_values_last_and_pages_split():
    pairs = [_pair(f"p{i}", "s", a, b) for i, (a, b) in enumerate([(80, 85), (90, 70), (85, None), (70, 69)])]
    pages = _render(_context(), pairs, rows_per_page=3)
    assert set(pages) == {"index.html", "pairs-2.html", "clip_i.a-1.html", "clip_i.a-2.html", "clip_i.b-1.html",
                          "clip_i.b-2.html", "diff.clip_i.b-1.html", "diff.clip_i.b-2.html"}

    def order(*names: str) -> list[str]:
        text = "".join(pages[n] for n in names)
        return sorted(("p0", "p1", "p2", "p3"), key=lambda p: text.index(f'data-pair="{p} / s"'))

    assert order("diff.clip_i.b-1.html", "diff.clip_i.b-2.html") == ["p1", "p3", "p0", "p2"]  # -20, -1, +5, none
    assert order("clip_i.a-1.html", "clip_i.a-2.html") == ["p3", "p0", "p2", "p1"]
    assert 'data-pair="p3 / s"' in pages["pairs-2.html"] and "<p>summary</p>" not in pages["pairs-2.html"]
    assert "<p>summary</p>" in pages["index.html"]


def _listed(html: str) -> list[str]:
    return re.findall(r'data-pair="([^"]*) / s"', html)


def test_only_the_worst_pages_of_each_sort_but_the_listing_order_are_written():
    pairs = [_pair(f"p{i:02d}", "s", 50.0 + (i * 7) % 30, 60.0, seam_a=float(i % 13), seam_b=None if i % 4 else 1.0)
             for i in range(25)]
    pages = _render(_context(seam=True), pairs, rows_per_page=10, sorted_pages=1)
    listing = ["index.html", "pairs-2.html", "pairs-3.html"]
    assert sorted(pages) == sorted([*listing, "seam_delta_e.a-1.html", "seam_delta_e.b-1.html", "clip_i.a-1.html",
                                    "clip_i.b-1.html", "diff.clip_i.b-1.html"])
    assert [p for n in listing for p in _listed(pages[n])] == [f"p{i:02d}" for i in range(25)]
    assert "product, scene, page 2 of 3</p>" in pages["pairs-2.html"]  # the listing order: all of it, no note
    # seam ΔE worst (highest) first, ties in listing order; without a value last.
    worst = pages["seam_delta_e.a-1.html"]
    assert _listed(worst) == [p.product_id for p in sorted(pairs, key=lambda p: -p.cells["a"].quality.seam_delta_e)
                              ][:10]
    assert "seam ΔE a, page 1 of 1 (its worst 10 of 25 pairs)" in worst and "seam ΔE 12.00" in worst
    assert _listed(pages["seam_delta_e.b-1.html"]) == [f"p{i:02d}" for i in (0, 4, 8, 12, 16, 20, 24, 1, 2, 3)]
    # The pages link only pages that exist: the sorts' first pages, and each order's own pages.
    for html in pages.values():
        assert set(re.findall(r'href="([^"/]+\.html)"', html)) <= set(pages)

    only = _render(_context(seam=True), pairs, rows_per_page=10, sorted_pages=0)
    assert sorted(only) == sorted(listing)
    assert "seam_delta_e" not in only["index.html"] and "clip_i.a-1.html" not in only["index.html"]


def test_quality_columns_are_shown_escaped_and_absent_for_older_runs():
    quality = Quality(seam_delta_e=7.25, region_delta_e=18.5, outside_changed_px=1234,
                      flags=("seam", "<b>outside_changed</b>"), attempts=2, model_family="flux2-klein",
                      prompt='a lamp </div><script>alert("p")</script>')
    pair = PairView("p", "s", 1, None, None, {
        "a": Cell("ok", thumb="t.jpg", image="i.png", scores={"clip_i": 80.0}, quality=quality),
        "b": Cell("failed", "nothing_inserted: no object", quality=Quality(None, None, None, ("nothing_inserted",),
                                                                            3, "flux2-klein", None))}, {})
    html = _render(_context(families={"a": "dtc", "b": "flux2-klein"}), [pair], rows_per_page=10)["index.html"]
    assert "seam ΔE 7.25 · region ΔE 18.50 · outside changed 1234 px · attempts 2 · flux2-klein" in html
    assert '<span class="flag">seam</span><span class="flag">&lt;b&gt;outside_changed&lt;/b&gt;</span>' in html
    assert "<script>" not in html and "a lamp &lt;/div&gt;&lt;script&gt;alert(&quot;p&quot;)" in html
    # The failed row's checks, its family in the column head (the variant's only one) and not repeated in the cell.
    assert '<div class="q">attempts 3</div><div class="flags"><span class="flag">nothing_inserted</span>' in html
    assert '<th>b <span class="family">flux2-klein</span></th>' in html and '<th>a <span class="family">dtc' in html
    older = _render(_context(), [_pair("p", "s", 80.0, 81.0)], rows_per_page=10)["index.html"]
    assert 'class="q"' not in older and 'class="flags"' not in older and "seam" not in older


def test_the_pager_links_few_pages_and_reaches_every_page_in_a_few_clicks():
    assert pager_numbers(1, 1) == [1] and pager_numbers(3, 7) == [1, 2, 3, 4, 5, 6, 7]
    numbers = pager_numbers(237, 500)
    assert numbers[0] == 1 and numbers[-1] == 500 and len(numbers) < 40
    assert set(range(232, 243)) <= set(numbers) and {190, 280, 100, 500} <= set(numbers)
    rng = np.random.default_rng(0)
    for start, target in rng.integers(1, 501, (300, 2)):
        page, clicks = int(start), 0
        while page != target:
            page = min(pager_numbers(page, 500), key=lambda k: abs(k - target))
            clicks += 1
        assert clicks <= 6, (start, target)


def test_pages_are_written_index_last_and_stale_pages_removed(tmp_path, monkeypatch):
    from pipeline.evaluate.report import build

    report = tmp_path / "report"
    report.mkdir()
    for name in ("index.html", "clip_i.a-7.html", "notes.txt"):
        (report / name).write_text("old")
    written = []
    monkeypatch.setattr(build, "write_bytes", lambda uri, data, s3, **kw: (written.append(uri.rpartition("/")[2]),
                                                                           storage.write_bytes(uri, data, s3, **kw)))
    pages = iter([("pairs-2.html", "<p>2</p>"), ("index.html", "<p>1</p>"), ("clip_i.a-1.html", "<p>a</p>")])
    assert write_pages(str(report), pages, None) == 3
    assert written == ["pairs-2.html", "clip_i.a-1.html", "index.html"]
    assert sorted(p.name for p in report.iterdir()) == ["clip_i.a-1.html", "index.html", "notes.txt", "pairs-2.html"]
    assert (report / "index.html").read_text() == "<p>1</p>"


def test_outline_follows_the_region_edge():
    small = Image.new("RGB", (40, 30), (0, 0, 0))
    region = Image.new("L", (400, 300), 0)
    region.paste(255, (100, 100, 300, 200))  # thumbnail pixels 10..30 x 10..20
    pixels = np.asarray(outline_region(small, region))
    red = np.all(pixels == OUTLINE, axis=-1)
    assert red[10, 15] and red[15, 10] and red[19, 29]  # on the edge
    assert not red[15, 20] and not red[2, 2] and not red[28, 38]  # inside and far outside
    assert scene_key("a/b") == "thumbs/scenes/a%2Fb.jpg"
    assert output_key("images/v/p%2F1/s.png") == "thumbs/images/v/p%2F1/s.jpg"


@pytest.mark.integration
def test_pages_and_thumbnails_on_s3_carry_their_content_type(s3_server, s3_bucket):
    import io

    import boto3

    from pipeline.core.storage import S3Config
    from pipeline.evaluate.report.thumbnails import make_thumbnail

    s3 = S3Config(endpoint_url=s3_server, region="us-east-1")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key="runs/r1/report/clip_i.a-9.html", Body=b"an earlier build's page")
    report = f"s3://{s3_bucket}/runs/r1/report"
    write_pages(report, [("index.html", "<p>1</p>"), ("pairs-2.html", "<p>2</p>")], s3)
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="runs/r1/report/")["Contents"]
    assert sorted(o["Key"].rpartition("/")[2] for o in listed) == ["index.html", "pairs-2.html"]
    for key in ("runs/r1/report/index.html", "runs/r1/report/pairs-2.html"):
        assert client.head_object(Bucket=s3_bucket, Key=key)["ContentType"] == "text/html; charset=utf-8"

    png = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 30)).save(png, format="PNG")
    client.put_object(Bucket=s3_bucket, Key="runs/r1/images/a/p/s.png", Body=png.getvalue())
    row = {"key": output_key("images/a/p/s.png"), "uri": f"s3://{s3_bucket}/runs/r1/images/a/p/s.png",
           "mask_uri": None, "box": None, "outline": False}
    assert make_thumbnail(row, report, 64, 10**7, s3)["status"] == "ok"
    head = client.head_object(Bucket=s3_bucket, Key="runs/r1/report/thumbs/images/a/p/s.jpg")
    assert head["ContentType"] == "image/jpeg"
