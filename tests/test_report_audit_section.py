"""The report's "Dataset audit" section in headless Chromium: a real audit (trashnet, 30 photos a class, cached
Lite0 vectors) written by `audit_run`, rendered with its thumbnails, paths needing escaping intact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import DATASETS
from test_audit_run import write_recipe
from test_report_page import browser  # noqa: F401 (the headless Chromium fixture)

from automl.audit.run import audit_run
from automl.report import write_report


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trashnet, 30 photos a class, linked under names a page must escape (quotes, <, &, spaces)."""
    base = tmp_path_factory.mktemp("audited")
    photos = base / "trash & <photos>"
    for folder in sorted(p for p in (DATASETS / "trashnet").iterdir() if p.is_dir()):
        (photos / folder.name).mkdir(parents=True)
        for number, source in enumerate(sorted(folder.iterdir())[:30]):
            os.symlink(source, photos / folder.name / f'{folder.name} "{number}" <b>&amp; {source.name}')
    run = base / "run"
    run.mkdir()
    write_recipe(run / "recipe.yaml", photos, name="trashnet")
    (run / "summary.json").write_text(json.dumps({"recipe": "trashnet"}), encoding="utf-8")
    audit_run(run)
    return run


def test_the_audit_section_shows_each_finding_as_a_thumbnail_with_its_path(audited_run: Path, browser) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    audit = json.loads((audited_run / "audit.json").read_text(encoding="utf-8"))
    assert "error" not in audit and audit["label_issues"]
    browser.get(write_report(audited_run).as_uri())
    section = browser.find_element(By.ID, "audit")
    assert section.find_element(By.TAG_NAME, "h2").text == "Dataset audit"
    cards = section.find_element(By.CLASS_NAME, "cards").text
    assert f"{len(audit['label_issues'])}\nlikely label errors" in cards
    figures = section.find_elements(By.CSS_SELECTOR, ".thumbs figure")
    titles = [figure.get_attribute("title") for figure in figures]
    pairs = sorted(audit["near_duplicates"], key=lambda pair: pair["leak"] is None)[:12]
    expected = [
        *(item["path"] for item in audit["label_issues"][:24]),
        *(path for pair in pairs for path in (pair["a"], pair["b"])),
        *(item["path"] for item in audit["outliers"][:12]),
    ]
    assert titles == expected  # quotes, <, & and spaces come back exactly: escaped, not mangled
    images = section.find_elements(By.CSS_SELECTOR, ".thumbs img")
    assert len(images) == len(figures)
    assert all(
        browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in images
    )
    first = audit["label_issues"][0]
    assert f"{first['given']} → {first['suggested']}" in figures[0].text
    assert Path(first["path"]).name in figures[0].text
