"""The review page in a real headless Chromium (the OS package, started by the test): every image loads, every
link to a full image resolves, sorting by an A/B difference changes the order (worst first), a screenshot is taken;
a run whose metadata has the inference job's quality columns shows them and sorts by seam ΔE, highest first.
And `tryall report RUN_URI` on a run that was not evaluated."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.report import main as report_main
from pipeline.evaluate.config import ReportConfig
from pipeline.evaluate.report import write_report
from pipeline.evaluate.run_folder import open_run
from pipeline.inference import record

pytestmark = pytest.mark.integration

SCREENSHOT_COPY = Path("/tmp/review-screenshot.png")  # kept for the person who builds the page to look at
QUALITY_SCREENSHOT_COPY = Path("/tmp/review-quality-screenshot.png")
# The inference job's checks of each output, as the metadata row declares them.
QUALITY_FIELDS = [pa.field("seam_delta_e", pa.float32()), pa.field("region_delta_e", pa.float32()),
                  pa.field("outside_changed_px", pa.int64()), pa.field("quality_flags", pa.list_(pa.string())),
                  pa.field("attempts", pa.int32()), pa.field("model_family", pa.string()),
                  pa.field("prompt", pa.string())]
PROMPT = 'a lamp on the table </td><script>document.title = "injected"</script>'
FAMILIES = {"a": "dtc", "b": "flux2-klein"}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("no Chromium and chromedriver on this machine (apt-get install chromium chromium-driver; "
                    ".ci/run installs them where apt-get exists)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _pairs_in_order(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll('tr.pair')).map(r => r.dataset.pair)")


def _images(driver) -> list[dict]:
    """Every image of the page, each scrolled into view first (thumbnails load lazily), once all have settled."""
    driver.execute_script("Array.from(document.images).forEach(i => i.scrollIntoView())")
    settled = "return Array.from(document.images).every(i => i.complete)"
    deadline = time.monotonic() + 10
    while not driver.execute_script(settled) and time.monotonic() < deadline:
        time.sleep(0.05)
    return driver.execute_script(
        "return Array.from(document.images).map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0}))")


def _full_image_links(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('td.out a')).map(a => a.href)")


def test_the_review_page_in_headless_chromium(evaluated_run, browser, tmp_path):
    folder = evaluated_run.folder
    index = folder / "report" / "index.html"
    browser.get(index.as_uri())
    assert browser.title == "tryall run ab-demo"

    images = _images(browser)
    # 6 pairs (2 products x 3 scenes), each row with its scene and product thumbnail; outputs of both variants for
    # the 4 pairs that worked, less the one whose image is missing: 3 + 2 + 7 different thumbnails.
    assert len(images) == 6 * 2 + 7 and len({i["src"] for i in images}) == 3 + 2 + 7
    assert all(i["ok"] for i in images), [i for i in images if not i["ok"]]
    assert all("/report/thumbs/" in i["src"] for i in images)
    links = _full_image_links(browser)
    assert len(links) == 7
    for link in links:
        assert Path(unquote(urlparse(link).path)).is_file(), link
    text = browser.find_element("tag name", "body").text
    assert "mask_empty: 4" in text and "evaluation: fetch_missing: 1" in text
    assert "FD-DINOv2" in text and "biased" in text
    fid = json.loads((folder / "eval" / "summary.json").read_text())["variants"]["a"]["fid"]
    assert "FID" in text and f"{fid['value']:.4g} (n=4 vs 2, biased)" in text
    assert "FID inputs 299 px by pytorch-fid's resize (bilinear, no antialiasing)" in text

    listed = _pairs_in_order(browser)
    assert len(listed) == 6 and listed == sorted(listed)
    browser.find_element("link text", "Δ CLIP-I b − a").click()
    assert browser.current_url.endswith("/report/diff.clip_i.b-1.html")
    by_difference = _pairs_in_order(browser)
    assert sorted(by_difference) == sorted(listed) and by_difference != listed
    metrics = {(r["product_id"], r["scene_id"], r["variant"]): r["clip_i"]
               for r in pq.read_table(folder / "eval" / "metrics.parquet").to_pylist()}
    diffs = {f"{p} / {s}": metrics[(p, s, "b")] - metrics[(p, s, "a")] for (p, s, v) in metrics
             if v == "a" and metrics[(p, s, "a")] is not None and metrics.get((p, s, "b")) is not None}
    assert by_difference[: len(diffs)] == sorted(diffs, key=diffs.get)  # worst (most negative) first, then no value
    assert all(i["ok"] for i in _images(browser))

    browser.get(index.as_uri())
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(height + 100, 4000))
    shot = tmp_path / "review.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    shutil.copyfile(shot, SCREENSHOT_COPY)


def test_tryall_report_on_a_run_not_evaluated(ab_run, tmp_path, capsys):
    folder = tmp_path / "ab-demo"
    shutil.copytree(ab_run, folder)
    assert report_main([str(folder), "--set", "report.rows_per_page=10"]) == 0
    assert "review page:" in capsys.readouterr().out
    page = (folder / "report" / "index.html").read_text()
    assert "not evaluated" in page and "CLIP-I" not in page
    # No scores: the listing order, and each variant's seam sort from the run's own measures.
    assert sorted(p.name for p in (folder / "report").glob("*.html")) == ["index.html", "seam_delta_e.a-1.html",
                                                                          "seam_delta_e.b-1.html"]
    assert len(list((folder / "report" / "thumbs").rglob("*.jpg"))) == 3 + 2 + 8
    summary = json.loads((folder / "summary.json").read_text())
    assert f"<td>{summary['finished_at']}</td>" in page


def _with_quality(row: dict, i: int) -> dict:
    ok = row["status"] == "ok"
    seam = float((i * 7) % 12) + 0.5 if ok else None
    return {"seam_delta_e": seam, "region_delta_e": None if seam is None else 3 * seam,
            "outside_changed_px": 10 * i if ok else None,
            "quality_flags": (["seam"] if seam > 8 else []) if ok else ["nothing_inserted"],
            "attempts": 2 if not ok or seam > 8 else 1, "model_family": FAMILIES[row["variant"]],
            "prompt": PROMPT if row["variant"] == "b" else None}


@pytest.fixture
def quality_run(evaluated_run, tmp_path, monkeypatch) -> Path:
    """A copy of the evaluated run whose metadata parts hold the quality columns (their values made up)."""
    folder = tmp_path / "ab-demo"
    shutil.copytree(evaluated_run.folder, folder)
    i = 0
    for part in sorted((folder / "metadata").rglob("*.parquet")):
        table = pq.read_table(part)
        values = []
        for row in table.to_pylist():
            values.append(_with_quality(row, i))
            i += 1
        for field in QUALITY_FIELDS:
            if field.name in table.column_names:
                table = table.drop_columns([field.name])
            table = table.append_column(field, pa.array([v[field.name] for v in values], field.type))
        pq.write_table(table, part)
    # Where the run's declared schema predates some of them, read them all the same.
    extra = [f for f in QUALITY_FIELDS if f.name not in record.METADATA_SCHEMA.names]
    monkeypatch.setattr(record, "METADATA_SCHEMA", pa.schema([*record.METADATA_SCHEMA, *extra]))
    return folder


def test_quality_columns_and_the_seam_sort_in_headless_chromium(quality_run, browser, tmp_path):
    result = write_report(str(quality_run), ReportConfig(rows_per_page=10, sorted_pages=1))
    browser.get((quality_run / "report" / "index.html").as_uri())
    assert browser.title == "tryall run ab-demo"  # the prompt's script did not run: it is text
    assert browser.execute_script("return document.querySelectorAll('td script').length") == 0
    heads = browser.execute_script("return Array.from(document.querySelectorAll('table.pairs th')).map(t => "
                                   "t.textContent)")
    assert "a dtc" in heads and "b flux2-klein" in heads
    text = browser.find_element("tag name", "body").text
    assert PROMPT in text and "nothing_inserted" in text and "seam ΔE" in text and "outside changed" in text
    rows = open_run(str(quality_run)).rows.to_pylist()
    assert len(rows) == 12 and all("seam_delta_e" in r for r in rows)
    first_ok = next(r for r in rows if r["status"] == "ok")
    assert f"seam ΔE {first_ok['seam_delta_e']:.2f} · region ΔE {first_ok['region_delta_e']:.2f}" in text

    browser.find_element("link text", "seam ΔE b").click()
    assert browser.current_url.endswith("/report/seam_delta_e.b-1.html")
    seams = {f"{r['product_id']} / {r['scene_id']}": r["seam_delta_e"] for r in rows if r["variant"] == "b"
             and r["seam_delta_e"] is not None}
    listed = _pairs_in_order(browser)
    assert len(listed) == 6 and listed[: len(seams)] == sorted(seams, key=lambda p: -seams[p])  # highest first
    assert all(i["ok"] for i in _images(browser))
    assert result.pages == 1 + 2 + 4 + 2  # the listing order; seam ΔE, CLIP-I and DINO-I per variant; 2 A/B sorts

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(height + 100, 4000))
    shot = tmp_path / "quality.png"
    assert browser.save_screenshot(str(shot))
    shutil.copyfile(shot, QUALITY_SCREENSHOT_COPY)
