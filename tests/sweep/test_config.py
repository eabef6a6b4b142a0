"""sweeps.yaml schema: the shipped file is valid, and every kind of bad file is rejected naming its key path."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from sweep.config import (DEFAULT_STORAGE, TRAINER_KEYS, ConfigError, default_sweeps_path, load_sweeps,
                          parse_sweeps)
from sweep.space import grid_search_space, make_pruner, make_sampler, param_names

REPO = Path(__file__).resolve().parents[2]
SHIPPED = load_sweeps(REPO / "sweeps.yaml")
THESIS_PARAMS = {"sparsity", "ttp", "k", "tau"}


def test_root_file_is_the_packaged_file():
    root, packaged = REPO / "sweeps.yaml", REPO / "sweep" / "sweeps.yaml"
    assert root.read_text() == packaged.read_text()


def test_default_path_falls_back_to_the_packaged_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARSESWEEP_SWEEPS", raising=False)
    path = default_sweeps_path()
    assert path.name == "sweeps.yaml" and path.parent.name == "sweep"
    assert "quickstart" in load_sweeps().sweeps
    (tmp_path / "sweeps.yaml").write_text(yaml.safe_dump({"sweeps": {"mine": _minimal()}}))
    assert list(load_sweeps().sweeps) == ["mine"]


def test_shipped_sweeps_cover_the_issue():
    sweeps = SHIPPED.sweeps
    for name in ("quickstart", "fashion-tradeoff", "higgs-tradeoff"):
        assert name in sweeps
    assert sweeps["quickstart"].dataset == "digits" and sweeps["quickstart"].n_trials <= 10
    for name in ("fashion-tradeoff", "higgs-tradeoff"):
        spec = sweeps[name]
        assert THESIS_PARAMS <= set(spec.space)
        assert (spec.space["sparsity"].low, spec.space["sparsity"].high) == (0.8, 0.995)
        assert {"lr", "optimizer", "evolve_every", "growth"} <= set(spec.space)
        assert spec.multi_objective and spec.storage == DEFAULT_STORAGE
    assert any(p.per_layer for s in sweeps.values() for p in s.space.values())
    assert {s.sampler["name"] for s in sweeps.values()} >= {"tpe", "nsga2", "grid"}


@pytest.mark.parametrize("name", list(SHIPPED.sweeps))
def test_every_shipped_sweep_builds_its_sampler_and_trainer_configs(name):
    spec = SHIPPED.sweeps[name]
    make_sampler(spec), make_pruner(spec)
    from sweep.train_config import TrainConfig

    for end in ("low", "high"):
        params = {}
        for pname in param_names(spec):
            base = pname.rsplit("_", 1)[0] if pname not in spec.space else pname
            p = spec.space[base]
            params[pname] = p.choices[0] if p.kind == "categorical" else getattr(p, end)
        TrainConfig.from_any(spec.trial_config(params))  # the trainer accepts every corner of the space


def test_trainer_keys_match_the_trainer():
    from sweep.train_config import TrainConfig

    assert set(TRAINER_KEYS) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_per_layer_sparsity_expands_and_folds_back():
    spec = SHIPPED.sweeps["fashion-per-layer"]
    names = param_names(spec)
    assert [n for n in names if n.startswith("sparsity_")] == ["sparsity_0", "sparsity_1", "sparsity_2", "sparsity_3"]
    config = spec.trial_config({"sparsity_0": 0.9, "sparsity_1": 0.95, "sparsity_2": 0.99, "sparsity_3": 0.8, "k": 3})
    assert config["sparsity"] == [0.9, 0.95, 0.99, 0.8] and config["k"] == 3
    assert config["dataset"] == "fashion-mnist" and config["hidden"] == [256, 256, 256]


def test_grid_space_enumerates_choices_and_steps():
    body = _minimal(space={"sparsity": {"low": 0.5, "high": 0.9, "step": 0.2}, "growth": ["gradient", "random"]},
                    sampler="grid")
    spec = parse_sweeps({"sweeps": {"g": body}}).sweeps["g"]
    assert grid_search_space(spec) == {"sparsity": [0.5, 0.7, 0.9], "growth": ["gradient", "random"]}


def _minimal(**overrides) -> dict:
    body = {
        "dataset": "digits",
        "epochs": 2,
        "space": {"sparsity": {"low": 0.5, "high": 0.9}},
        "objectives": [{"metric": "best_test_accuracy", "direction": "maximize"}],
        "n_trials": 2,
    }
    body.update(overrides)
    return body


def _with(path: list, value):
    body = copy.deepcopy(_minimal())
    node = body
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return {"sweeps": {"s": body}}


# (file content, key path the error must name, words the message must contain)
BAD_FILES = [
    pytest.param(_with(["colour"], "red"), "sweeps.s.colour", "unknown key", id="unknown-sweep-key"),
    pytest.param(_with(["space", "sparsity", "hgh"], 0.9), "sweeps.s.space.sparsity.hgh", "did you mean 'high'",
                 id="unknown-range-key"),
    pytest.param(_with(["fixed", "learning_rate"], 0.1), "sweeps.s.fixed.learning_rate", "unknown key",
                 id="unknown-fixed-key"),
    pytest.param(_with(["space", "sparsity"], {"low": 0.99, "high": 0.8}), "sweeps.s.space.sparsity",
                 "inverted range", id="inverted-range"),
    pytest.param(_with(["space", "sparsity"], {"low": 0.5, "high": 1.2}), "sweeps.s.space.sparsity.high",
                 "[0, 1)", id="sparsity-above-one"),
    pytest.param(_with(["space", "tau"], {"low": 0.0, "high": 0.1, "log": True}), "sweeps.s.space.tau.low",
                 "> 0", id="log-range-from-zero"),
    pytest.param(_with(["space", "k"], {"low": 0, "high": 8}), "sweeps.s.space.k.low", ">= 1", id="k-zero"),
    pytest.param(_with(["space", "optimizer"], {"choices": ["sgd", "lbfgs"]}), "sweeps.s.space.optimizer.choices[1]",
                 "one of", id="unknown-choice"),
    pytest.param(_with(["dataset"], "cifar10"), "sweeps.s.dataset", "unknown data set", id="unknown-dataset"),
    pytest.param(_with(["sampler"], "bayesopt"), "sweeps.s.sampler.name", "unknown sampler", id="unknown-sampler"),
    pytest.param(_with(["pruner"], "median") | {"sweeps": {"s": {**_minimal(), "pruner": "median", "objectives": [
        {"metric": "best_test_accuracy", "direction": "maximize"},
        {"metric": "ms_per_iteration", "direction": "minimize"}]}}}, "sweeps.s.pruner", "multi-objective",
        id="pruner-on-multi-objective"),
    pytest.param(_with(["objectives"], [{"metric": "accuracy", "direction": "maximize"}]),
                 "sweeps.s.objectives[0].metric", "unknown metric", id="unknown-metric"),
    pytest.param(_with(["objectives"], [{"metric": "nnz", "direction": "up"}]),
                 "sweeps.s.objectives[0].direction", "maximize", id="bad-direction"),
    pytest.param(_with(["n_trials"], 0), "sweeps.s.n_trials", ">= 1", id="zero-trials"),
    pytest.param(_with(["trials_per_gpu"], 1.5), "sweeps.s.trials_per_gpu", "integer", id="fractional-trials-per-gpu"),
    pytest.param(_with(["storage"], "sweeps.db"), "sweeps.s.storage", "sqlite:///", id="storage-not-a-url"),
    pytest.param(_with(["space", "ttp"], {"low": 0.001, "high": 0.01, "per_layer": True}),
                 "sweeps.s.space.ttp.per_layer", "only sparsity", id="per-layer-not-sparsity"),
    pytest.param(_with(["fixed", "sparsity"], 0.9), "sweeps.s.fixed.sparsity", "both fixed and searched",
                 id="fixed-and-searched"),
    pytest.param(_with(["sampler"], "grid"), "sweeps.s.space.sparsity", "grid sampler", id="grid-without-steps"),
    pytest.param(_with(["space", "hidden"], {"choices": [[64]]}), "sweeps.s.space.hidden", "cannot be searched",
                 id="searching-the-network"),
    pytest.param({"sweep": {}}, "sweep", "unknown key", id="unknown-top-level-key"),
    pytest.param([1, 2], "test.yaml", "mapping", id="not-a-mapping"),
]


@pytest.mark.parametrize("data,path,words", BAD_FILES)
def test_bad_files_name_the_offending_key(data, path, words):
    with pytest.raises(ConfigError) as info:
        parse_sweeps(data, "test.yaml")
    assert info.value.path == path
    assert words in str(info.value)


def test_invalid_yaml_and_missing_file_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweeps: {a: [}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweeps(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_sweeps(tmp_path / "missing.yaml")


def test_unknown_sweep_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known sweeps: quickstart"):
        SHIPPED.get("quickstrat")
