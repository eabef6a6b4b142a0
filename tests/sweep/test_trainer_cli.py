"""`sweep train`: flags are the trainer's config keys, --json prints the metrics, bad input exits 2."""

import json

import pytest

from sweep.cli import main


def test_sweep_train_json_prints_the_metrics(capsys):
    status = main(["train", "--dataset", "digits", "--hidden", "32", "32", "--sparsity", "0.8", "--batch-size", "64",
                   "--epochs", "2", "--device", "cpu", "--json", "--no-progress"])
    assert status == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["status"] == "ok" and metrics["epochs_run"] == 2 and metrics["final_test_accuracy"] > 0.2


def test_sweep_train_accepts_per_layer_sparsity_and_dense(capsys):
    status = main(["train", "--dataset", "digits", "--hidden", "32", "--sparsity", "0.8", "dense", "--batch_size",
                   "64", "--epochs", "1", "--json", "--no-progress"])
    assert status == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["nnz"] == round(64 * 0.2) * 32 + 32 * 10


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sparsity", "1.5"], "sparsity must be in [0, 1)"),
        (["--sparsity", "0.9", "0.9"], "list of 4"),
        (["--growth", "none", "--prune-dead"], "prune_dead"),
        (["--device", "tpu"], "device must be"),
    ],
)
def test_sweep_train_bad_values_exit_2_with_the_reason(capsys, argv, message):
    assert main(["train", "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err


def test_sweep_train_unknown_flag_is_a_usage_error():
    with pytest.raises(SystemExit) as info:
        main(["train", "--sparsty", "0.9"])
    assert info.value.code == 2


def test_sweep_train_reports_divergence_with_exit_1(capsys):
    status = main(["train", "--dataset", "digits", "--hidden", "32", "--loss", "cross_entropy", "--lr", "1e6",
                   "--epochs", "2", "--no-progress"])
    assert status == 1
    out = capsys.readouterr().out
    assert "diverged" in out and "lower the lr" in out
