"""The page's HTML on its own: ids are data (escaped, quoted in links), sorting puts the worst first, pages split;
the scene thumbnail's outline lies on the region's edge."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluate.report.page import Cell, PageContext, PairView, failures_html, orders_for, render_pages
from pipeline.evaluate.report.thumbnails import OUTLINE, outline_region, output_key, scene_key

NASTY = '<script>alert("x")</script> & a/b%20'


def _pair(product: str, scene: str, a: float | None, b: float | None) -> PairView:
    cells = {"a": Cell("ok", thumb=f"thumbs/images/a/{product}.jpg", image=f"images/a/{product}.png",
                       scores={"clip_i": a}),
             "b": Cell("ok", thumb=None, image=None, message="fetch_missing: gone", scores={"clip_i": b})}
    diff = None if a is None or b is None else b - a
    return PairView(product, scene, 7, None, None, cells, {("clip_i", "b"): diff})


def _context(pairs_failures=None) -> PageContext:
    return PageContext(title=NASTY, variants=["a", "b"], metrics=["clip_i"], orders=orders_for(["a", "b"], ["clip_i"]),
                       summary_html="<p>summary</p>", failures_html=failures_html(pairs_failures or {}))


def test_ids_and_messages_are_escaped_and_links_quoted():
    pages = render_pages(_context({"decode_error": [(NASTY, "room", "a", "bad <b>bytes</b>")]}),
                         [_pair(NASTY, "room%2F1", 80.0, 81.0)], rows_per_page=10)
    html = pages["index.html"]
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a/b%20" in html
    assert "bad &lt;b&gt;bytes&lt;/b&gt;" in html
    # The link's path is quoted segment by segment: the id's '%' stays a '%' in the file name the browser opens.
    assert 'href="../images/a/%3Cscript%3Ealert%28%22x%22%29%3C/script%3E%20%26%20a/b%2520.png"' in html
    assert 'data-pair="&lt;script&gt;' in html


def test_sorting_is_worst_first_with_missing_values_last_and_pages_split():
    pairs = [_pair(f"p{i}", "s", a, b) for i, (a, b) in enumerate([(80, 85), (90, 70), (85, None), (70, 69)])]
    pages = render_pages(_context(), pairs, rows_per_page=3)
    assert set(pages) == {"index.html", "pairs-2.html", "clip_i.a-1.html", "clip_i.a-2.html", "clip_i.b-1.html",
                          "clip_i.b-2.html", "diff.clip_i.b-1.html", "diff.clip_i.b-2.html"}

    def order(*names: str) -> list[str]:
        text = "".join(pages[n] for n in names)
        return sorted(("p0", "p1", "p2", "p3"), key=lambda p: text.index(f'data-pair="{p} / s"'))

    assert order("diff.clip_i.b-1.html", "diff.clip_i.b-2.html") == ["p1", "p3", "p0", "p2"]  # -20, -1, +5, none
    assert order("clip_i.a-1.html", "clip_i.a-2.html") == ["p3", "p0", "p2", "p1"]
    assert 'data-pair="p3 / s"' in pages["pairs-2.html"] and "<p>summary</p>" not in pages["pairs-2.html"]
    assert "<p>summary</p>" in pages["index.html"]


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
def test_pages_on_s3_are_served_as_html(s3_server, s3_bucket):
    import boto3

    from pipeline.core.storage import S3Config
    from pipeline.evaluate.report.build import write_pages

    write_pages(f"s3://{s3_bucket}/runs/r1/report", {"index.html": "<p>1</p>", "pairs-2.html": "<p>2</p>"},
                S3Config(endpoint_url=s3_server, region="us-east-1"))
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    for key in ("runs/r1/report/index.html", "runs/r1/report/pairs-2.html"):
        assert client.head_object(Bucket=s3_bucket, Key=key)["ContentType"] == "text/html; charset=utf-8"
