"""sweep reproduce: the result files of tables 3 and 4 and the evolution figure, on small data."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import sparselayer
from sweep import thesis
from sweep.cli import main
from sweep.data import load_dataset
from sweep.reproduce import common, evolution, table3, table4
from sweep.reproduce.torch_sparse import TorchSparseMLP

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def digits_instead_of_mnist(monkeypatch):
    """Point every reproduction at the bundled digits (and a small network), so the tests need no files."""
    monkeypatch.setattr(thesis, "HIDDEN", [32, 32, 32])
    monkeypatch.setattr(thesis, "TABLE3_INFERENCE_HIDDEN", [32, 32])
    monkeypatch.setattr(thesis, "TABLE3_TRAINING_HIDDEN", [32, 32])
    original_plan = table4.plan

    def plan(datasets, higgs, data_dir):
        rows = original_plan(["mnist"], "skip", data_dir)
        for row in rows:
            row["data"] = "digits"
        return rows

    monkeypatch.setattr(table4, "plan", plan)
    monkeypatch.setattr(common, "load_dataset_for_timing", lambda data_dir, device: load_dataset("digits", device=device))


def test_table4_writes_markdown_and_json_with_both_settings(digits_instead_of_mnist, tmp_path):
    payload = table4.run_table4(device="cpu", epochs=2, quick=True, out_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "table4.json").read_text())
    assert saved["complete"] and saved["epochs"] == 2 and saved["quick"]
    assert [row["row"] for row in saved["rows"]] == ["dense", "90%", "97%", "99%"]
    for row in saved["rows"]:
        for name in ("thesis", "ours"):
            assert row[name]["status"] == "ok" and len(row[name]["test_accuracy"]) == 2
        assert row["thesis"]["config"]["loss"] == "mse" and row["ours"]["config"]["loss"] == common.OUR_SETTINGS["loss"]
    assert saved["rows"][0]["thesis"]["lr"] == thesis.DENSE_LR and saved["rows"][1]["thesis"]["lr"] == thesis.SPARSE_LR
    assert saved["rows"][0]["ours"]["lr"] == (common.OUR_DENSE_LR or common.OUR_SETTINGS["lr"])
    markdown = (tmp_path / "table4.md").read_text()
    assert "**2 epochs**" in markdown and "Ours, thesis settings" in markdown and "Ours, ours settings" in markdown
    # digits is not the thesis's data: no row may be presented as a comparison
    assert "on other data" in markdown and "| n/a |" in markdown
    assert payload["data"]["digits"]["train_rows"] == 1437


def test_table4_markdown_marks_diverged_runs_and_says_why():
    curve = {"final_test_accuracy": 0.1135, "best_test_accuracy": 0.8754, "test_accuracy": [0.8754, 0.1135]}
    reason = "collapsed: test accuracy fell from 87.54% (epoch 1) to 11.35% (chance 11.35%) ...; lower the lr"
    payload = {
        "quick": False, "command": "sweep reproduce table4", "started": "now", "complete": True, "wall_s": 1.0,
        "environment": {"device": "cpu", "torch": torch.__version__}, "epochs": 60, "hidden": [256, 256, 256],
        "seed": 0, "data": {}, "settings": {"thesis": common.THESIS_SETTINGS, "ours": common.OUR_SETTINGS},
        "rows": [{"table_dataset": "mnist", "data": "mnist", "row": "97%", "thesis_accuracy": 0.9616,
                  "comparable_with_thesis": True,
                  "thesis": {"status": "ok", "reason": None, **curve, "final_test_accuracy": 0.9411},
                  "ours": {"status": "diverged", "reason": reason, **curve}}],
    }
    markdown = table4.markdown(payload)
    assert "| 11.35% (87.54%) diverged | -84.81 |" in markdown and "94.11% (87.54%) | -2.05 |" in markdown
    assert f"## Runs that diverged\n\n- mnist 97%, ours settings: {reason}\n" in markdown
    payload["rows"][0]["ours"] = payload["rows"][0]["thesis"]
    assert "Runs that diverged" not in table4.markdown(payload)


@pytest.mark.skipif(not (SHARED_DATA / "higgs-subsets").exists(), reason="the real HIGGS samples are not here")
def test_table4_higgs_samples_are_labelled_not_comparable(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(thesis, "HIDDEN", [32, 32, 32])  # the real rows, a small network
    status = main(["reproduce", "table4", "--datasets", "higgs", "--higgs", "samples", "--epochs", "1", "--quick",
                   "--settings", "thesis", "--device", "cpu", "--data-dir", str(SHARED_DATA), "--out", str(tmp_path),
                   "--no-progress"])
    assert status == 0
    saved = json.loads((tmp_path / "table4.json").read_text())
    assert {row["data"] for row in saved["rows"]} == {"higgs-sas-11k", "higgs-h2o-5k"}
    assert len(saved["rows"]) == 10 and not any(row["comparable_with_thesis"] for row in saved["rows"])
    assert all(not info["comparable_with_thesis"] for info in saved["data"].values())
    markdown = (tmp_path / "table4.md").read_text()
    assert markdown.count("NOT the thesis's rows") >= 10 and "95-99-99-90%" in markdown
    out = capsys.readouterr().out
    assert "total wall time" in out


def test_evolution_writes_table_and_plot_with_worker_processes(digits_instead_of_mnist, tmp_path):
    payload = evolution.run_evolution(device="cpu", epochs=2, dataset="digits", out_dir=tmp_path, jobs=2,
                                      progress=False)
    assert len(payload["runs"]) == 9 and payload["complete"]
    assert (tmp_path / "evolution.png").stat().st_size > 10_000
    markdown = (tmp_path / "evolution.md").read_text()
    assert "| 99% |" in markdown and "growth = gradient" in markdown and "evolution.png" in markdown
    assert isinstance(payload["gradient_beats_others_at_99"], bool)
    assert all(run["status"] == "ok" and len(run["test_accuracy"]) == 2 for run in payload["runs"])
    assert [(r["sparsity"], r["growth"]) for r in payload["runs"]] == [
        (s, g) for s in evolution.SPARSITIES for g in evolution.GROWTHS]
    assert all(run["config"]["hidden"] == [32, 32, 32] for run in payload["runs"])


def test_table3_measures_all_three_implementations(digits_instead_of_mnist, tmp_path):
    payload = table3.run_table3(device="cpu", quick=True, out_dir=tmp_path, progress=False)
    assert payload["complete"] and json.loads((tmp_path / "table3.json").read_text())["complete"]
    rows = {row["row"]: row for row in payload["rows"]}
    assert set(rows) == {"dense", "90%", "97%", "99%"}
    for label in ("90%", "97%", "99%"):
        for key in ("inference_ms", "torch_sparse_inference_ms", "training_ms", "torch_sparse_training_ms"):
            assert rows[label][key] > 0
    assert rows["dense"]["inference_speedup"] == 1.0 and "torch_sparse_inference_ms" not in rows["dense"]
    markdown = (tmp_path / "table3.md").read_text()
    assert "torch.sparse CSR" in markdown and "296 (1.0x)" in markdown


def test_torch_sparse_baseline_matches_sparselayer_step():
    """The cuSPARSE column times the same computation: one SGD step gives the same weights and outputs."""
    torch.manual_seed(0)
    model = sparselayer.SparseMLP([20, 16, 8, 4], sparsity=0.7, generator=torch.Generator().manual_seed(0)).double()
    baseline = TorchSparseMLP(model, lr=0.01)
    x = torch.rand(12, 20, dtype=torch.float64)
    target = F.one_hot(torch.arange(12) % 4, 4).double()
    assert torch.equal(baseline.predict(x), model(x).argmax(dim=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    F.mse_loss(model(x), target, reduction="sum").backward()
    optimizer.step()
    baseline.train_step(x, target)
    layers = model.sparse_layers()
    for (crow, col, values, bias, _), layer in zip(baseline.layers, layers):
        torch.testing.assert_close(values, layer.values.detach())
        torch.testing.assert_close(bias, layer.bias.detach())


def test_reproduce_rejects_a_bad_epoch_budget(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "table4", "--epochs", "0"])
    assert info.value.code == 2


def test_table4_hidden_widths_reach_every_run_and_the_results(digits_instead_of_mnist, tmp_path):
    table4.run_table4(device="cpu", epochs=1, quick=True, out_dir=tmp_path, datasets=["mnist"], settings=["thesis"],
                      hidden=[24, 16],
                      progress=False)
    saved = json.loads((tmp_path / "table4.json").read_text())
    assert saved["hidden"] == [24, 16]
    assert all(row["thesis"]["config"]["hidden"] == [24, 16] for row in saved["rows"])
    assert "network 24-16 hidden" in (tmp_path / "table4.md").read_text()


def test_table4_mixed_higgs_row_needs_three_hidden_widths(tmp_path, capsys):
    assert main(["reproduce", "table4", "--datasets", "higgs", "--hidden", "64", "64", "--out", str(tmp_path)]) == 2
    assert "needs 3 hidden widths" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written
