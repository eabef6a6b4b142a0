"""The report page in headless Chromium: no console errors, every figure drawn, a picture that is not blank."""

from __future__ import annotations

import pytest

import dash_images
from dashboards import build_report, load_sweep
from dashboards.browser import check_page
from dashboards.report import PAGE_READY_JS
from dashboards.series import FIGURES
from dash_fixtures import chromium, made_studies, quickstart  # noqa: F401 - fixtures

ROOTS_DRAWN = "Array.from(document.querySelectorAll('[data-root-id]')).filter(d => d.childElementCount > 0).length"
# Click the "trial" column twice (descending) and read the first row's trial.
SORT_BY_TRIAL = ("(() => { const th = document.querySelectorAll('#best-table th')[1]; th.click(); th.click();"
                 " return document.querySelector('#best-table tbody td:nth-child(2)').textContent; })()")


def test_quickstart_report_in_chromium(chromium, quickstart, tmp_path):
    storage, name = quickstart
    report = build_report(name, storage, tmp_path / name)
    page = check_page(report.index, ready_js=PAGE_READY_JS, full_page=True, browser=chromium,
                      probes={"drawn": ROOTS_DRAWN, "last_trial": SORT_BY_TRIAL})
    assert page.errors == [], page.messages
    assert page.ready and page.probes["drawn"] == len(FIGURES)
    completed = [t.number for t in load_sweep(name, storage).completed]
    assert page.probes["last_trial"] == f"#{max(completed)}"
    image = dash_images.assert_picture(page.screenshot, min_size=(1000, 1500), min_colours=200)
    assert image.height > 1500  # the full page: figures and the table


@pytest.mark.parametrize("name, text", [
    ("empty", "No completed trials"),
    ("all-failed", "Every trial failed"),
    ("bare", "No completed trial reported its accuracy"),
    ("multi", "ms_per_iteration (min)"),
])
def test_corner_case_pages_in_chromium(chromium, made_studies, tmp_path, name, text):
    report = build_report(name, made_studies, tmp_path / name)
    page = check_page(report.index, browser=chromium, ready_js=PAGE_READY_JS,
                      probes={"text": "document.body.innerText", "drawn": ROOTS_DRAWN})
    assert page.errors == [], page.messages
    assert page.ready and text in page.probes["text"]
    assert page.probes["drawn"] == report.index.read_text().count("data-root-id")
    dash_images.assert_picture(page.screenshot)


def test_console_errors_are_caught(chromium, tmp_path):
    # The check itself must be able to fail: a page that throws and logs an error.
    page_file = tmp_path / "bad.html"
    page_file.write_text("<html><body><p>hi</p><script>console.error('boom'); undefinedFunction();</script></body></html>")
    page = check_page(page_file, browser=chromium)
    assert any("boom" in e for e in page.errors) and any("undefinedFunction" in e for e in page.errors)

