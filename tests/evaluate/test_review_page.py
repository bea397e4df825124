"""The review page in a real headless Chromium (the OS package, started by the test): every image loads, every
link to a full image resolves, sorting by an A/B difference changes the order (worst first), a screenshot is taken.
And `tryall report RUN_URI` on a run that was not evaluated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow.parquet as pq
import pytest

from jobs.report import main as report_main

pytestmark = pytest.mark.integration

SCREENSHOT_COPY = Path("/tmp/review-screenshot.png")  # kept for the person who builds the page to look at
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
    assert sorted(p.name for p in (folder / "report").glob("*.html")) == ["index.html"]  # one order: no scores
    assert len(list((folder / "report" / "thumbs").rglob("*.jpg"))) == 3 + 2 + 8
    summary = json.loads((folder / "summary.json").read_text())
    assert f"<td>{summary['finished_at']}</td>" in page
