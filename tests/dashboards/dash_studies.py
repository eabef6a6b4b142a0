"""Studies written directly with Optuna in the contract's format (docs/architecture.md, "Studies").

The real-sweep fixture (conftest.py) covers the runner's output; these cover the corners a short sweep does not
reach: zero trials, every trial failed, multi-objective, a single hyperparameter.
"""

from __future__ import annotations

import math
import random

import optuna

OBJECTIVE_ACC = {"metric": "best_test_accuracy", "direction": "maximize"}
OBJECTIVE_TIME = {"metric": "ms_per_iteration", "direction": "minimize"}


def create(storage: str, name: str, objectives: list[dict], dataset: str = "digits") -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage,
                                directions=[o["direction"] for o in objectives])
    study.set_metric_names([o["metric"] for o in objectives])
    study.set_user_attr("objectives", objectives)
    study.set_user_attr("sweep", {"name": name, "dataset": dataset, "epochs": 4, "objectives": objectives})
    return study


def _metrics(sparsity: float, lr: float, epochs: int, rng: random.Random) -> dict:
    peak = 0.97 - 0.25 * sparsity**8 - 3 * abs(math.log10(lr) + 2.5) / 100
    curve = [peak * (1 - math.exp(-(e + 1) / 1.5)) + rng.uniform(-0.01, 0.01) for e in range(epochs)]
    return {
        "status": "ok", "reason": None, "epochs_run": epochs,
        "train_loss": [1.0 / (e + 1) for e in range(epochs)], "test_accuracy": curve,
        "best_test_accuracy": max(curve), "final_test_accuracy": curve[-1],
        "ms_per_iteration": 0.5 + 4.0 * (1 - sparsity) + rng.uniform(0, 0.3),
        "s_per_epoch": 0.2, "inference_ms": 3.0, "peak_memory_bytes": None,
        "n_params": 100_000, "nnz": int(100_000 * (1 - sparsity)),
        "param_bytes": int(4 * 100_000 * (1 - sparsity)) + 1000, "overall_sparsity": sparsity,
        "device": "cpu",
    }


def add_trials(study: optuna.Study, n_complete: int, n_failed: int = 0, params: tuple[str, ...] = ("sparsity", "lr"),
               epochs: int = 4, seed: int = 0) -> None:
    """Finished trials written in one batch (one transaction per trial is slow on a busy disk)."""
    rng = random.Random(seed)
    objectives = study.user_attrs["objectives"]
    dists = {"sparsity": optuna.distributions.FloatDistribution(0.5, 0.99),
             "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "optimizer": optuna.distributions.CategoricalDistribution(["sgd", "momentum", "adam"])}
    samplers = {"sparsity": lambda: rng.uniform(0.5, 0.99), "lr": lambda: 10 ** rng.uniform(-4, -1),
                "optimizer": lambda: rng.choice(["sgd", "momentum", "adam"])}
    trials = []
    for i in range(n_complete + n_failed):
        values = {p: samplers[p]() for p in params}
        config = {"dataset": study.user_attrs["sweep"]["dataset"], "epochs": epochs, "seed": i, **values}
        attrs = {"config": config, "worker": "tcp://127.0.0.1:1234", "attempt": 1,
                 "command": "sweep train " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in config.items())}
        common = {"params": values, "distributions": {p: dists[p] for p in params}}
        if i >= n_complete:
            attrs["fail_reason"] = ["diverged: loss is NaN at epoch 2", "worker died (tcp://127.0.0.1:1234)"][i % 2]
            trials.append(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs, **common))
            continue
        metrics = _metrics(values.get("sparsity", 0.9), values.get("lr", 1e-3), epochs, rng)
        trials.append(optuna.trial.create_trial(values=[metrics[o["metric"]] for o in objectives],
                                                user_attrs={**attrs, **metrics}, **common))
    study.add_trials(trials)
