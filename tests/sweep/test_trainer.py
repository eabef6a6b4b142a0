"""sweep.trainer.train on scikit-learn's bundled digits: accuracy, metrics contract, determinism, divergence."""

import json
import math

import pytest
import torch

from conftest import DEVICES
from sweep.train_config import ConfigError, TrainConfig
from sweep.trainer import collapse_reason, config_to_command, train

SMALL = {"dataset": "digits", "hidden": [64, 64], "batch_size": 64}

METRIC_KEYS = {
    "status", "reason", "epochs_run", "train_loss", "test_accuracy", "best_test_accuracy", "final_test_accuracy",
    "ms_per_iteration", "s_per_epoch", "inference_ms", "peak_memory_bytes", "n_params", "nnz", "param_bytes",
    "overall_sparsity", "device",
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "config, floor",
    [
        ({"sparsity": 0.8, "epochs": 8}, 0.8),  # the thesis's settings: MSE summed, SGD, lr = 1/(2*batch)
        ({"sparsity": None, "epochs": 8, "lr": 1e-3}, 0.7),
        ({"sparsity": 0.8, "epochs": 5, "loss": "cross_entropy", "optimizer": "adam", "lr": 1e-2}, 0.8),
        ({"sparsity": [0.5, 0.9, None], "epochs": 5, "optimizer": "momentum", "loss": "cross_entropy", "lr": 1e-3}, 0.8),
    ],
    ids=["sparse-thesis", "dense", "sparse-adam-ce", "mixed-momentum"],
)
def test_training_on_digits_is_well_above_chance(device, config, floor):
    metrics = train({**SMALL, **config, "device": device})
    assert metrics["status"] == "ok", metrics["reason"]
    assert metrics["final_test_accuracy"] > floor  # chance is 0.1
    assert metrics["train_loss"][-1] < metrics["train_loss"][0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "config",
    [
        {"sparsity": 0.8, "epochs": 8},  # the thesis's settings
        {"sparsity": [0.5, 0.9, None], "epochs": 5, "optimizer": "adam", "loss": "cross_entropy", "lr": 1e-2},
    ],
    ids=["sparse-thesis", "mixed-adam-ce"],
)
def test_bf16_precision_trains_like_fp32(device, config):
    bf16 = train({**SMALL, **config, "device": device, "precision": "bf16"})
    fp32 = train({**SMALL, **config, "device": device})
    assert bf16["status"] == "ok", bf16["reason"]
    assert bf16["final_test_accuracy"] > 0.8  # chance is 0.1
    assert bf16["final_test_accuracy"] == pytest.approx(fp32["final_test_accuracy"], abs=0.05)
    # bf16 really ran (other losses than fp32's from the first epoch on), and stayed close to fp32
    assert bf16["train_loss"][0] != fp32["train_loss"][0]
    assert bf16["train_loss"][0] == pytest.approx(fp32["train_loss"][0], rel=0.05)
    assert bf16["param_bytes"] == fp32["param_bytes"]  # the weights stay float32


def test_metrics_have_the_promised_keys_types_and_units():
    metrics = train({**SMALL, "sparsity": 0.9, "epochs": 3, "device": "cpu"})
    assert METRIC_KEYS <= set(metrics)
    json.dumps(metrics)  # plain JSON types only
    assert metrics["status"] == "ok" and metrics["reason"] is None and metrics["epochs_run"] == 3
    assert len(metrics["train_loss"]) == len(metrics["test_accuracy"]) == 3
    assert all(0.0 <= a <= 1.0 for a in metrics["test_accuracy"])
    assert metrics["best_test_accuracy"] == max(metrics["test_accuracy"])
    assert metrics["final_test_accuracy"] == metrics["test_accuracy"][-1]
    assert metrics["ms_per_iteration"] > 0 and metrics["s_per_epoch"] > 0 and metrics["inference_ms"] > 0
    # ms per iteration times the 23 iterations of an epoch cannot exceed the epoch's seconds by much
    assert metrics["ms_per_iteration"] * 23 / 1e3 <= metrics["s_per_epoch"] * 1.5
    assert metrics["peak_memory_bytes"] is None and metrics["device"] == "cpu"
    weights = 64 * 64 + 64 * 64 + 64 * 10
    assert metrics["nnz"] < weights * 0.15
    assert metrics["overall_sparsity"] == pytest.approx(1 - metrics["nnz"] / weights)
    assert metrics["n_params"] == metrics["nnz"] + 64 + 64 + 10  # values + biases
    assert metrics["param_bytes"] > metrics["n_params"] * 4  # float32 values plus int64 indices


def test_dense_network_counts_every_weight():
    metrics = train({**SMALL, "sparsity": 0, "epochs": 1})
    assert metrics["nnz"] == 64 * 64 + 64 * 64 + 64 * 10 and metrics["overall_sparsity"] == 0.0


@pytest.mark.parametrize("growth", ["gradient", "random", "none"])
def test_growth_modes_keep_nnz_constant(growth):
    first = train({**SMALL, "sparsity": 0.9, "epochs": 1, "growth": growth})
    later = train({**SMALL, "sparsity": 0.9, "epochs": 4, "growth": growth, "ttp": 0.05})
    assert later["status"] == "ok" and later["nnz"] == first["nnz"]


def test_evolution_changes_the_outcome():
    fixed = train({**SMALL, "sparsity": 0.9, "epochs": 4, "growth": "none"})
    evolving = train({**SMALL, "sparsity": 0.9, "epochs": 4, "growth": "gradient", "ttp": 0.05})
    assert fixed["train_loss"][0] == evolving["train_loss"][0]  # same start: evolution runs after epoch 1
    assert fixed["train_loss"][1:] != evolving["train_loss"][1:]


def test_same_seed_same_run_other_seed_other_run():
    a = train({**SMALL, "sparsity": 0.9, "epochs": 3, "seed": 7, "growth": "random"})
    b = train({**SMALL, "sparsity": 0.9, "epochs": 3, "seed": 7, "growth": "random"})
    c = train({**SMALL, "sparsity": 0.9, "epochs": 3, "seed": 8, "growth": "random"})
    assert a["train_loss"] == b["train_loss"] and a["test_accuracy"] == b["test_accuracy"]
    assert a["train_loss"] != c["train_loss"]


@pytest.mark.parametrize("sparsity", [0.8, None])
def test_divergence_is_reported_not_raised(sparsity):
    metrics = train({**SMALL, "sparsity": sparsity, "epochs": 3, "loss": "cross_entropy", "lr": 1e6})
    assert metrics["status"] == "diverged"
    assert "nan" in metrics["reason"] or "inf" in metrics["reason"]
    assert "epoch 1" in metrics["reason"] and "lr" in metrics["reason"]
    assert metrics["epochs_run"] == 0 and metrics["inference_ms"] is None
    json.dumps(metrics)


# (test accuracy per epoch, train loss per epoch): curves of real runs, shortened (results/table4.json, H100).
COLLAPSED_CURVES = {
    "mnist-97-momentum": ([0.8754, 0.7352, 0.1032, 0.3936, 0.101, 0.1135], [0.921, 1.529, 3.180, 1.568, 2.742, 2.302]),
    "fashion-99-momentum": ([0.6607, 0.344, 0.104, 0.283, 0.1, 0.1], [1.422, 2.208, 2.450, 1.979, 2.304, 2.304]),
}
HEALTHY_CURVES = {
    "steady": ([0.85, 0.90, 0.93, 0.94], [0.60, 0.27, 0.20, 0.17]),
    "noisy-end": ([0.836, 0.895, 0.8957, 0.8766], [0.64, 0.30, 0.20, 0.18]),  # fashion dense: -2 points, fine
    "overfitting": ([0.90, 0.95, 0.60, 0.50], [0.5, 0.1, 0.05, 0.04]),  # accuracy falls but the loss does not rise
    "never-learned": ([0.11, 0.10, 0.11], [17.5, 2.5, 2.4]),  # at chance throughout: poor, not a collapse
    "barely-learned": ([0.1007, 0.1, 0.1], [1.43, 4.29, 2.30]),  # a real run: it blew up, but had nothing to lose
    "one-epoch": ([0.9], [0.3]),
}


@pytest.mark.parametrize("name", COLLAPSED_CURVES)
def test_a_run_that_learns_then_dies_counts_as_diverged(name):
    accuracy, loss = COLLAPSED_CURVES[name]
    reason = collapse_reason(accuracy, loss, chance=0.1135)
    assert reason is not None and reason.startswith("collapsed:")
    assert f"{max(accuracy):.2%} (epoch 1)" in reason and f"{accuracy[-1]:.2%}" in reason and "lower the lr" in reason


@pytest.mark.parametrize("name", HEALTHY_CURVES)
def test_noise_overfitting_and_poor_runs_are_not_collapses(name):
    accuracy, loss = HEALTHY_CURVES[name]
    assert collapse_reason(accuracy, loss, chance=0.1) is None


def test_report_is_called_every_epoch_and_may_stop_the_run():
    seen = []

    class Pruned(Exception):
        pass

    def report(epoch, accuracy):
        seen.append((epoch, accuracy))
        if epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        train({**SMALL, "sparsity": 0.9, "epochs": 5}, report=report)
    assert [e for e, _ in seen] == [1, 2] and all(0 <= a <= 1 for _, a in seen)


def test_sum_reduction_is_the_reading_that_trains_with_the_thesis_lr():
    summed = train({**SMALL, "sparsity": 0.8, "epochs": 4})
    mean = train({**SMALL, "sparsity": 0.8, "epochs": 4, "loss_reduction": "mean"})
    assert summed["lr"] == mean["lr"] == 1 / (2 * 64)
    assert summed["final_test_accuracy"] > mean["final_test_accuracy"] + 0.3


@pytest.mark.parametrize(
    "config, message",
    [
        ({"sparsty": 0.9}, "did you mean 'sparsity'"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": [0.9, 0.9]}, "list of 4"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"loss_reduction": "avg"}, "loss_reduction"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"k": 1.5}, "k must be"),
        ({"dataset": "cifar"}, "dataset must be one of"),
        ({"device": "gpu"}, "device"),
        ({"growth": "none", "prune_dead": True}, "prune_dead"),
        ({"hidden": [0]}, "hidden"),
        ({"cuda_graph": "yes"}, "cuda_graph must be true or false"),
        ({"precision": "fp16"}, "precision must be one of fp32, bf16, not 'fp16'"),
    ],
)
def test_bad_config_is_rejected_early_with_the_fix(config, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_any(config)


def test_thesis_learning_rate_defaults():
    assert TrainConfig.from_any({"sparsity": 0.9}).effective_lr() == 1 / 1024
    assert TrainConfig.from_any({"sparsity": None}).effective_lr() == 1e-4
    assert TrainConfig.from_any({"sparsity": [0, 0.9, 0, 0]}).effective_lr() == 1 / 1024
    assert TrainConfig.from_any({"sparsity": 0.9, "lr": 0.1}).effective_lr() == 0.1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        train({**SMALL, "device": "cuda", "epochs": 1})


@pytest.mark.gpu
def test_cuda_run_reports_peak_memory_and_device_name():
    metrics = train({**SMALL, "sparsity": 0.9, "epochs": 2, "device": "cuda"})
    assert metrics["status"] == "ok" and metrics["peak_memory_bytes"] > 0
    assert metrics["device"].startswith("cuda:0 (")


def test_config_to_command_round_trips_through_the_cli():
    from sweep.cli import build_parser

    config = {"dataset": "mnist", "hidden": [128, 64], "sparsity": [0.95, 0.99, None], "loss": "cross_entropy",
              "optimizer": "adam", "lr": 0.001, "epochs": 3, "growth": "random", "ttp": 0.01, "k": 5,
              "prune_dead": True, "tau_factor": 1.2, "seed": 3, "data_dir": "/tmp/some dir", "precision": "bf16"}
    command = config_to_command(config)
    assert command.startswith("sweep train ")
    import shlex

    args = build_parser().parse_args(shlex.split(command)[1:])
    from sweep.cli.train import config_from_args

    assert config_from_args(args) == TrainConfig.from_any(config).to_dict()
    assert config_to_command({}) == "sweep train"
    assert not math.isnan(TrainConfig.from_any(config).effective_lr())


def test_training_continues_when_evolution_changes_nnz():
    # regrow < 1 grows fewer weights than it removes, so every evolution resizes the values Parameters.
    first = train({**SMALL, "sparsity": 0.9, "epochs": 1, "regrow": 0.5, "ttp": 0.05})
    metrics = train({**SMALL, "sparsity": 0.9, "epochs": 3, "regrow": 0.5, "ttp": 0.05, "optimizer": "momentum",
                     "lr": 1e-3})
    assert metrics["status"] == "ok" and metrics["epochs_run"] == 3
    assert metrics["nnz"] < first["nnz"]
