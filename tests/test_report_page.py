"""report.html opened in a real headless Chromium: every section renders, every image loads, no console error."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from automl.errors import InputError
from automl.report import write_report
from automl.report.page import MAX_THUMBNAILS, SECTIONS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
)


@pytest.fixture(scope="module")
def report(exported_run: Path) -> Path:
    return write_report(exported_run)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("headless Chromium is missing: `make browser` installs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_report_is_self_contained(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "the report must not load anything remote"
    assert "<script" not in page


def test_every_section_renders_in_chromium_without_console_errors(
    report: Path, exported_run: Path, browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(report.as_uri())
    for section_id, heading, _ in SECTIONS:
        section = browser.find_element(By.ID, section_id)
        assert section.find_element(By.TAG_NAME, "h2").text == heading
        assert section.find_elements(By.CSS_SELECTOR, "img, table, .cards"), f"section {section_id} has no content"
    images = browser.find_elements(By.TAG_NAME, "img")
    broken = [
        i.get_attribute("alt")
        for i in images
        if not browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
    ]
    assert images and not broken, f"images that did not load: {broken}"
    plots = {
        s: len(browser.find_elements(By.CSS_SELECTOR, f"#{s} img.plot"))
        for s in ("history", "importance", "time", "classes", "confusion", "phases")
    }
    assert all(plots.values()), f"sections without their plot: {plots}"

    rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
    summary = json.loads((exported_run / "summary.json").read_text())
    assert len(rows) == summary["trials"]["done"]
    highlighted = browser.find_element(By.CSS_SELECTOR, "#leaderboard tr.best")
    assert highlighted.find_elements(By.TAG_NAME, "td")[1].text == summary["best"]["trial"]
    metrics = json.loads((exported_run / "metrics.json").read_text())
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#misclassified .thumbs img")
    assert len(thumbnails) == min(MAX_THUMBNAILS, len(metrics["misclassified"]))
    class_rows = browser.find_elements(By.CSS_SELECTOR, "#classes > table tbody tr")
    assert [r.find_element(By.TAG_NAME, "td").text for r in class_rows] == metrics["labels"]
    cards = {c.text.splitlines()[0]: c.text.splitlines()[-1] for c in browser.find_elements(By.CSS_SELECTOR, ".card")}
    low, high = metrics["top1_ci95"]
    assert cards["95 % interval"] == f"{100 * low:.1f}–{100 * high:.1f} %"

    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    browser.set_window_size(1200, browser.execute_script("return document.body.scrollHeight") + 100)
    assert browser.save_screenshot(str(tmp_path / "report.png"))


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a run folder"):
        write_report(tmp_path)
