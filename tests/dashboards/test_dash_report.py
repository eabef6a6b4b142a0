"""dashboards.report and `sweep report`: the folder written for a real sweep and for the corner cases."""

from __future__ import annotations

import re

import pytest

import dash_images
from dashboards import build_report, load_sweep
from dashboards.series import FIGURES
from sweep.cli import main
from dash_fixtures import made_studies, quickstart  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def quickstart_report(quickstart, tmp_path_factory):
    storage, name = quickstart
    return build_report(name, storage, tmp_path_factory.mktemp("report") / name), load_sweep(name, storage)


def _html(report) -> str:
    return report.index.read_text(encoding="utf-8")


def test_quickstart_report_has_every_figure(quickstart_report):
    report, _ = quickstart_report
    html = _html(report)
    for figure in FIGURES:
        section = re.search(rf'<section class="figure" id="fig-{figure}">(.*?)</section>', html, re.S)
        assert section, f"no section for {figure}"
        assert "data-root-id" in section.group(1), f"no interactive figure in the {figure} section"
    assert [p.name for p in report.pngs] == [f"{f}.png" for f in FIGURES]


def test_quickstart_report_pngs_are_pictures(quickstart_report):
    report, _ = quickstart_report
    for png in report.pngs:
        assert png.is_file() and png.stat().st_size > 5000, png
        dash_images.assert_picture(png.read_bytes())


def test_quickstart_report_table_lists_the_best_trials_with_commands(quickstart_report):
    report, data = quickstart_report
    html = _html(report)
    table = re.search(r'<table id="best-table">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    completed = data.completed
    assert len(rows) == len(completed) > 0
    for trial in completed:
        assert f"#{trial.number}<" in table
        assert trial.attrs["command"].startswith("sweep train") and trial.attrs["command"] in html
    for param in completed[0].params:
        assert f">{param}</th>" in table


def test_quickstart_report_counts_its_failures(quickstart_report):
    report, data = quickstart_report
    assert f"Failed trials: {len(data.failed)}</h2>" in _html(report)
    assert report.counts == data.state_counts()


def test_report_is_self_contained(quickstart_report):
    html = _html(quickstart_report[0])
    assert not re.search(r"<script[^>]*\ssrc=", html), "the page loads a script from elsewhere"
    assert not re.search(r"<link[^>]*\shref=", html), "the page loads a stylesheet from elsewhere"
    assert "Bokeh" in html  # bokeh's own JS is inline


def test_zero_trials_gives_a_clear_page_and_no_pngs(made_studies, tmp_path):
    report = build_report("empty", made_studies, tmp_path / "empty")
    html = _html(report)
    assert "No completed trials" in html and "sweep run empty" in html
    assert "data-root-id" not in html and report.pngs == []
    assert list(report.folder.iterdir()) == [report.index]


def test_all_failed_lists_every_reason(made_studies, tmp_path):
    report = build_report("all-failed", made_studies, tmp_path / "failed")
    html = _html(report)
    assert "Every trial failed" in html and "Failed trials: 3</h2>" in html
    assert "diverged: loss is NaN at epoch 2" in html and "worker died (tcp://127.0.0.1:1234)" in html
    assert "#0, #2" in html and "#1<" in html


def test_multi_objective_report(made_studies, tmp_path):
    report = build_report("multi", made_studies, tmp_path / "multi")
    html = _html(report)
    assert "ms_per_iteration (min)" in html and "(the Pareto front first)" in html
    assert len(report.pngs) == len(FIGURES)


def test_thesis_points_appear_for_a_thesis_data_set(made_studies, tmp_path):
    html = _html(build_report("mnist", made_studies, tmp_path / "mnist"))
    assert "thesis, table 4" in html and "has no results for the data set" not in html


def test_few_trials_explain_the_missing_importances(made_studies, tmp_path):
    html = _html(build_report("one-trial", made_studies, tmp_path / "one"))
    assert "needs at least 3 completed trials (this sweep has 1)" in html


def test_a_study_without_trainer_metrics_still_gets_a_page(made_studies, tmp_path):
    report = build_report("bare", made_studies, tmp_path / "bare")
    html = _html(report)
    assert "No completed trial reported its accuracy and time per iteration" in html
    assert "loss (min)" in html and html.count('<tr><td class="number"') == 5
    assert len(report.pngs) == len(FIGURES)  # each with its message


def test_rebuild_replaces_an_old_report_and_leaves_no_staging(made_studies, tmp_path):
    out = tmp_path / "reports" / "mnist"
    build_report("one-trial", made_studies, out)
    build_report("mnist", made_studies, out)
    assert "Sweep <code>mnist</code>" in (out / "index.html").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["mnist"]


def test_refuses_to_overwrite_a_folder_that_is_not_a_report(made_studies, tmp_path):
    keep = tmp_path / "precious.txt"
    keep.write_text("mine")
    with pytest.raises(FileExistsError, match="--out"):
        build_report("mnist", made_studies, tmp_path)
    assert keep.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_cli_writes_the_report(made_studies, tmp_path, capsys):
    assert main(["report", "mnist", "--storage", made_studies, "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "14 trials (12 completed, 0 pruned, 2 failed" in out and (tmp_path / "r" / "index.html").is_file()


@pytest.mark.parametrize("argv, message", [
    (["report", "nope"], "no study named 'nope'"),
    (["report", "mnist", "--top", "0"], "--top must be at least 1"),
])
def test_cli_usage_errors_exit_2(made_studies, tmp_path, capsys, argv, message):
    assert main([*argv, "--storage", made_studies, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_cli_missing_storage_exits_2_and_creates_nothing(tmp_path, capsys):
    db = tmp_path / "missing.db"
    assert main(["report", "quickstart", "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "r")]) == 2
    assert "sweep run" in capsys.readouterr().err and not db.exists()
