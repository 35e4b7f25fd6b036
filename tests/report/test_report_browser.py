"""The report in a real browser (headless Chromium through Selenium): grid, paging, status filter, sort.

Skipped, saying why, when Chromium, its driver or Selenium is missing (`.ci/install-browser` installs them).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from diffedit_batch.data.results import iter_result_records
from diffedit_batch.report import build_report

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1600"]


def _find(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.webdriver.chrome.service import Service

    binary = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no Chromium or chromedriver on PATH: run .ci/install-browser (apt chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))  # no selenium-manager download
    yield driver
    driver.quit()


def _wait(driver, view: str, timeout: float = 10.0) -> None:
    """Until the grid shows the view whose state hash is ``view`` (set by the page after each render)."""
    deadline = time.monotonic() + timeout
    shown = None
    while time.monotonic() < deadline:
        shown = driver.execute_script("return document.getElementById('grid').dataset.view")
        if shown == view:
            return
        time.sleep(0.05)
    raise AssertionError(f"the grid never showed view {view!r}; it shows {shown!r}")


def _ids(driver) -> list[str]:
    return [card.get_attribute("data-id") for card in driver.find_elements("css selector", "#grid .card")]


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_report_in_chromium(report_job, browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    out = tmp_path / "report"
    build_report(str(report_job.prefix), output=str(out), page_size=2, chunk_rows=2, workers=2)
    order = [r["id"] for batch in iter_result_records(str(report_job.prefix)) for r in batch]  # the report's order

    browser.get((out / "index.html").as_uri())
    _wait(browser, "")
    assert _ids(browser) == order[:2]
    assert browser.find_element("id", "pages").text == "of 3"
    assert browser.find_element("id", "matches").text == "5 records"
    # Every thumbnail on the page decoded.
    browser.execute_script("document.querySelectorAll('#grid img').forEach(function (i) { i.loading = 'eager'; });")
    broken = browser.execute_script(
        "return Array.from(document.querySelectorAll('#grid img')).filter(i => i.complete && !i.naturalWidth).length")
    assert broken == 0

    browser.find_element("id", "next").click()
    _wait(browser, "page=2")
    assert _ids(browser) == order[2:4]
    browser.find_element("id", "next").click()
    _wait(browser, "page=3")
    assert _ids(browser) == order[4:]
    assert browser.find_element("id", "next").get_property("disabled")

    Select(browser.find_element("id", "status")).select_by_value("error")
    _wait(browser, "status=error")
    assert sorted(_ids(browser)) == ["d", "e"]
    cards = browser.find_elements("css selector", "#grid .card")
    assert all("status-error" in card.get_attribute("class") for card in cards)
    assert {card.find_element("css selector", ".error b").text for card in cards} == {"storage:", "invalid_row:"}
    assert "missing.png" in browser.find_element("css selector", "#grid .card[data-id='d'] .error").text

    Select(browser.find_element("id", "status")).select_by_value("all")
    _wait(browser, "")
    Select(browser.find_element("id", "sort")).select_by_value("clip_target_score")
    _wait(browser, "sort=clip_target_score")
    Select(browser.find_element("id", "dir")).select_by_value("desc")
    _wait(browser, "sort=clip_target_score&dir=desc")
    scores = {i: report_job.records[i]["clip_target_score"] for i in "abc"}
    best_first = sorted(scores, key=lambda i: -round(scores[i], 4))
    assert _ids(browser) == best_first[:2]
    browser.find_element("id", "next").click()
    _wait(browser, "sort=clip_target_score&dir=desc&page=2")
    assert _ids(browser)[0] == best_first[2]  # then the records without a score, last in either direction
    assert set(_ids(browser)[1:]) <= {"d", "e"}

    # A bookmarked view opens as it was.
    browser.get((out / "index.html").as_uri() + "#status=ok&sort=clip_target_score")
    _wait(browser, "status=ok&sort=clip_target_score")
    assert _ids(browser) == best_first[::-1][:2]

    assert _severe(browser) == []
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    print(f"report screenshot: {shot}")


SCREENSHOT = REPO / "docs" / "guides" / "images" / "report.png"


@pytest.mark.skipif(os.environ.get("DIFFEDIT_REPORT_SCREENSHOT") != "1",
                    reason="regenerates docs/guides/images/report.png only when DIFFEDIT_REPORT_SCREENSHOT=1")
def test_report_screenshot_of_the_bundled_example(browser, tmp_path, tiny_config_overrides, tiny_clip_dir, ray_local):
    """The report guide's picture: the bundled example (examples/manifest.parquet) on the tiny models, its report
    in Chromium from the metrics down, saved as a small PNG (a 64-colour palette) in docs/guides/images/."""
    from PIL import Image

    from diffedit_batch.config import load_config
    from diffedit_batch.pipeline import run_job

    config = load_config(REPO / "configs" / "tiny.yaml", [
        *tiny_config_overrides,
        f"metrics.clip_model={tiny_clip_dir}",
        "metrics.clip_cpus_per_actor=0.25",
        "job.cpus_per_actor=0.5",
        "job.progress_interval_s=600",
    ])
    prefix = tmp_path / "example"
    summary = run_job(config, str(REPO / "examples" / "manifest.parquet"), str(prefix))
    assert summary.ok > 0, summary.line()
    out = tmp_path / "report"
    build_report(str(prefix), output=str(out), page_size=8, workers=2)

    browser.set_window_size(1200, 1400)
    browser.get((out / "index.html").as_uri())
    _wait(browser, "")
    browser.execute_script("document.querySelectorAll('#grid img').forEach(function (i) { i.loading = 'eager'; });")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not browser.execute_script(
            "return Array.from(document.querySelectorAll('#grid img')).every(function (i) { return i.complete; });"):
        time.sleep(0.05)
    # The metrics, the filters and the grid: what a reader looks for (the summary above is tables of text).
    browser.execute_script("""
        var heading = Array.from(document.querySelectorAll('h2'))
            .find(function (h) { return h.textContent.trim() === 'Metrics'; });
        (heading || document.getElementById('grid')).scrollIntoView();""")
    raw = tmp_path / "raw.png"
    browser.save_screenshot(str(raw))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    Image.open(raw).convert("RGB").quantize(colors=64).save(SCREENSHOT, optimize=True)
    assert SCREENSHOT.stat().st_size < 300_000, f"{SCREENSHOT} is {SCREENSHOT.stat().st_size} bytes"
