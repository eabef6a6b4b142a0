"""`sweeps.yaml`: the schema of a named sweep, and loading + validating the file.

Validation happens entirely before anything touches a database, and every error names the key path that is
wrong (``sweeps.quickstart.space.sparsity.high``) and how to fix it.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "ParamSpec",
    "SweepSpec",
    "SweepFile",
    "DEFAULT_STORAGE",
    "DEFAULT_PAYLOAD",
    "default_sweeps_path",
    "load_sweeps",
    "parse_sweeps",
]

DEFAULT_STORAGE = "sqlite:///sweeps.db"
DEFAULT_PAYLOAD = "sweep.trainer:train"
SWEEPS_ENV = "SPARSESWEEP_SWEEPS"

# The trainer's config keys (docs/architecture.md); tests check this against sweep.trainer when it exists.
TRAINER_KEYS = (
    "dataset", "data_dir", "hidden", "sparsity", "loss", "loss_reduction", "optimizer", "lr", "batch_size",
    "epochs", "growth", "ttp", "tau", "tau_factor", "k", "evolve_every", "prune_dead", "regrow", "init", "seed",
    "device", "cuda_graph", "precision",
)
# Scalar metrics the trainer returns; an objective must be one of them (for the trainer payload).
TRAINER_METRICS = (
    "best_test_accuracy", "final_test_accuracy", "ms_per_iteration", "s_per_epoch", "inference_ms",
    "peak_memory_bytes", "n_params", "nnz", "param_bytes", "overall_sparsity", "epochs_run",
)
FALLBACK_DATASETS = ("digits", "mnist", "fashion-mnist", "higgs", "higgs-h2o-5k", "higgs-sas-11k")

SAMPLERS = {
    "tpe": {"seed", "n_startup_trials", "multivariate", "constant_liar"},
    "nsga2": {"seed", "population_size", "mutation_prob", "crossover_prob"},
    "random": {"seed"},
    "grid": {"seed"},
}
PRUNERS = {
    "none": set(),
    "median": {"n_startup_trials", "n_warmup_steps", "interval_steps"},
    "percentile": {"percentile", "n_startup_trials", "n_warmup_steps", "interval_steps"},
    "hyperband": {"min_resource", "max_resource", "reduction_factor"},
    "successive_halving": {"min_resource", "reduction_factor", "min_early_stopping_rate"},
}
DIRECTIONS = ("maximize", "minimize")


def _in_unit_open_high(v):  # [0, 1)
    return 0 <= v < 1


# Known trainer parameters: (kind, check, what the check means). Used for fixed values and search ranges.
PARAM_DOMAINS: dict[str, tuple[str, Any, str]] = {
    "sparsity": ("float", _in_unit_open_high, "in [0, 1) (0 = dense)"),
    "ttp": ("float", lambda v: 0 < v < 1, "in (0, 1)"),
    "tau": ("float", lambda v: v > 0, "> 0"),
    "tau_factor": ("float", lambda v: v > 1, "> 1"),
    "k": ("int", lambda v: v >= 1, ">= 1"),
    "lr": ("float", lambda v: v > 0, "> 0"),
    "evolve_every": ("int", lambda v: v >= 1, ">= 1"),
    "regrow": ("float", lambda v: v >= 0, ">= 0"),
    "batch_size": ("int", lambda v: v >= 1, ">= 1"),
    "epochs": ("int", lambda v: v >= 1, ">= 1"),
    "seed": ("int", lambda v: v >= 0, ">= 0"),
}
CHOICE_DOMAINS: dict[str, tuple] = {
    "optimizer": ("sgd", "momentum", "adam"),
    "growth": ("gradient", "random", "none"),
    "loss": ("mse", "cross_entropy"),
    "loss_reduction": ("sum", "mean"),
    "init": ("sparse_xavier", "xavier"),
    "prune_dead": (True, False),
}

SWEEP_KEYS = {
    "description", "dataset", "data_dir", "hidden", "epochs", "fixed", "space", "objectives", "sampler", "pruner",
    "n_trials", "trials_per_gpu", "max_retries", "prefetch", "storage", "payload",
}
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "per_layer"}


class ConfigError(ValueError):
    """A sweeps.yaml problem; the message starts with the offending key path."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class ParamSpec:
    """One search-space dimension. `per_layer` expands to `name_0 .. name_{L-1}` (one per layer)."""

    name: str
    kind: str  # "float", "int" or "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    per_layer: bool = False

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        if self.per_layer:
            out["per_layer"] = True
        return out


@dataclass(frozen=True)
class SweepSpec:
    name: str
    dataset: str
    epochs: int
    hidden: tuple[int, ...]
    space: dict[str, ParamSpec]
    objectives: tuple[tuple[str, str], ...]  # (metric, direction)
    sampler: dict
    n_trials: int
    pruner: dict | None = None
    fixed: dict = field(default_factory=dict)
    data_dir: str | None = None
    trials_per_gpu: int = 1
    max_retries: int = 2
    prefetch: int = 1
    storage: str = DEFAULT_STORAGE
    payload: str = DEFAULT_PAYLOAD
    description: str = ""

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [m for m, _ in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def base_config(self) -> dict:
        """The trainer config every trial shares, before the sampled parameters are applied."""
        config = dict(self.fixed)
        config.update(dataset=self.dataset, epochs=self.epochs, hidden=list(self.hidden))
        if self.data_dir is not None:
            config["data_dir"] = self.data_dir
        return config

    def trial_config(self, params: dict) -> dict:
        """The trainer config of a trial: base config + params, per-layer `sparsity_i` folded into a list."""
        config = self.base_config()
        per_layer: dict[str, list] = {}
        for name, value in params.items():
            m = re.fullmatch(r"(.+)_(\d+)", name)
            if m and m.group(1) in self.space and self.space[m.group(1)].per_layer:
                per_layer.setdefault(m.group(1), [None] * self.n_layers)[int(m.group(2))] = value
            else:
                config[name] = value
        config.update(per_layer)
        return config

    def replace(self, **changes) -> "SweepSpec":
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        data.update(changes)
        return SweepSpec(**data)

    def to_dict(self) -> dict:
        """The validated spec as plain data (stored as the study's `sweep` user attr)."""
        out = {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "hidden": list(self.hidden),
            "epochs": self.epochs,
            "fixed": copy.deepcopy(self.fixed),
            "space": {name: p.to_dict() for name, p in self.space.items()},
            "objectives": [{"metric": m, "direction": d} for m, d in self.objectives],
            "sampler": dict(self.sampler),
            "pruner": dict(self.pruner) if self.pruner else None,
            "n_trials": self.n_trials,
            "trials_per_gpu": self.trials_per_gpu,
            "max_retries": self.max_retries,
            "prefetch": self.prefetch,
            "storage": self.storage,
            "payload": self.payload,
        }
        return out


@dataclass(frozen=True)
class SweepFile:
    path: str
    sweeps: dict[str, SweepSpec]

    def get(self, name: str) -> SweepSpec:
        if name not in self.sweeps:
            known = ", ".join(self.sweeps) or "(none)"
            raise ConfigError(f"sweeps.{name}", f"no sweep named {name!r} in {self.path}; known sweeps: {known}")
        return self.sweeps[name]


# ----------------------------------------------------------------------------------------------- loading


def default_sweeps_path() -> Path:
    """$SPARSESWEEP_SWEEPS, else ./sweeps.yaml when present, else the copy shipped in the package."""
    env = os.environ.get(SWEEPS_ENV)
    if env:
        return Path(env)
    local = Path("sweeps.yaml")
    if local.is_file():
        return local
    return Path(__file__).resolve().parent / "sweeps.yaml"


def load_sweeps(path: str | os.PathLike | None = None) -> SweepFile:
    """Read and validate a sweeps file; raises ConfigError (with the key path) on any problem."""
    path = Path(path) if path is not None else default_sweeps_path()
    label = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(label, "file not found; pass --file PATH or create sweeps.yaml") from None
    except OSError as exc:
        raise ConfigError(label, f"cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(label, f"not valid YAML: {exc}") from None
    return parse_sweeps(data, label)


def parse_sweeps(data: Any, label: str = "sweeps.yaml") -> SweepFile:
    if not isinstance(data, dict):
        raise ConfigError(label, "the file must be a mapping with one key, `sweeps:`")
    _no_unknown(data, {"sweeps"}, "", label)
    sweeps = data.get("sweeps")
    if not isinstance(sweeps, dict) or not sweeps:
        raise ConfigError("sweeps", "must be a non-empty mapping of sweep name -> sweep")
    out = {}
    for name, body in sweeps.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"sweeps.{name}", "a sweep name is letters, digits, '-', '_' or '.'")
        out[name] = _parse_sweep(name, body, f"sweeps.{name}")
    return SweepFile(label, out)


# ----------------------------------------------------------------------------------------------- schema


def _no_unknown(mapping: dict, allowed: set, path: str, label: str | None = None) -> None:
    for key in mapping:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            hint = _closest(str(key), allowed)
            raise ConfigError(where, f"unknown key{hint}; allowed keys: {', '.join(sorted(map(str, allowed)))}")


def _closest(key: str, allowed) -> str:
    import difflib

    match = difflib.get_close_matches(key, [str(a) for a in allowed], n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _number(value, path: str, *, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(path, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(path, f"must be finite, got {value!r}")
    return value


def _positive_int(value, path: str, minimum: int = 1) -> int:
    _number(value, path, integer=True)
    if value < minimum:
        raise ConfigError(path, f"must be >= {minimum}, got {value}")
    return value


def _check_domain(name: str, value, path: str) -> None:
    """A fixed value or a range end of a known trainer parameter must be possible."""
    if name in PARAM_DOMAINS:
        kind, ok, meaning = PARAM_DOMAINS[name]
        if value is None and name in ("k", "lr", "tau_factor"):
            return  # None = the thesis's rule (k = sqrt(N_t), lr = 1/(2*batch))
        _number(value, path, integer=(kind == "int"))
        if not ok(value):
            raise ConfigError(path, f"{name} must be {meaning}, got {value!r}")
    elif name in CHOICE_DOMAINS and value not in CHOICE_DOMAINS[name]:
        raise ConfigError(path, f"{name} must be one of {list(CHOICE_DOMAINS[name])}, got {value!r}")


def _parse_sweep(name: str, body: Any, path: str) -> SweepSpec:
    if not isinstance(body, dict):
        raise ConfigError(path, "a sweep must be a mapping")
    _no_unknown(body, SWEEP_KEYS, path)
    for key in ("dataset", "epochs", "space", "objectives", "n_trials"):
        if key not in body:
            raise ConfigError(f"{path}.{key}", "required key is missing")

    payload = body.get("payload", DEFAULT_PAYLOAD)
    if not isinstance(payload, str) or not re.fullmatch(r"[\w.]+:[\w]+", payload):
        raise ConfigError(f"{path}.payload", f"must be 'module:function', got {payload!r}")
    is_trainer = payload == DEFAULT_PAYLOAD

    dataset = body["dataset"]
    known = _dataset_names()
    if not isinstance(dataset, str) or (is_trainer and dataset not in known):
        raise ConfigError(f"{path}.dataset", f"unknown data set {dataset!r}; known: {', '.join(known)}")

    data_dir = body.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise ConfigError(f"{path}.data_dir", f"must be a path or null, got {data_dir!r}")

    epochs = _positive_int(body["epochs"], f"{path}.epochs")
    hidden = body.get("hidden", [256, 256, 256])
    if not isinstance(hidden, list) or not hidden:
        raise ConfigError(f"{path}.hidden", f"must be a non-empty list of layer widths, got {hidden!r}")
    for i, width in enumerate(hidden):
        _positive_int(width, f"{path}.hidden[{i}]")
    n_layers = len(hidden) + 1

    fixed = body.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{path}.fixed", "must be a mapping of trainer settings")
    if is_trainer:
        _no_unknown(fixed, set(TRAINER_KEYS) - {"dataset", "data_dir", "hidden", "epochs"}, f"{path}.fixed")
    for key, value in fixed.items():
        if key == "sparsity" and isinstance(value, list):
            if len(value) != n_layers:
                raise ConfigError(f"{path}.fixed.sparsity", f"per-layer list needs {n_layers} entries (hidden + output), got {len(value)}")
            for i, v in enumerate(value):
                if v is not None:
                    _check_domain("sparsity", v, f"{path}.fixed.sparsity[{i}]")
        elif is_trainer:
            _check_domain(key, value, f"{path}.fixed.{key}")

    space = _parse_space(body["space"], f"{path}.space", is_trainer)
    overlap = set(space) & set(fixed)
    if overlap:
        key = sorted(overlap)[0]
        raise ConfigError(f"{path}.fixed.{key}", "is both fixed and searched; remove it from one of `fixed` and `space`")

    objectives = _parse_objectives(body["objectives"], f"{path}.objectives", is_trainer)
    sampler = _parse_choice_block(body.get("sampler", "tpe"), SAMPLERS, f"{path}.sampler", "sampler")
    if sampler["name"] == "grid":
        for pname, p in space.items():
            if p.kind != "categorical" and p.step is None:
                raise ConfigError(f"{path}.space.{pname}", "the grid sampler needs `choices` or a `step` for every parameter")
    pruner = body.get("pruner")
    if pruner is not None:
        pruner = _parse_choice_block(pruner, PRUNERS, f"{path}.pruner", "pruner")
        if pruner["name"] == "percentile" and not isinstance(pruner.get("percentile"), (int, float)):
            raise ConfigError(f"{path}.pruner.percentile", "the percentile pruner needs `percentile` (0-100)")
        if pruner["name"] == "none":
            pruner = None
    if pruner is not None and len(objectives) > 1:
        raise ConfigError(f"{path}.pruner", "Optuna cannot prune multi-objective studies; remove `pruner` or keep one objective")

    storage = body.get("storage", DEFAULT_STORAGE)
    if not isinstance(storage, str) or not re.fullmatch(r"[a-z][a-z0-9+]*://.*", storage):
        raise ConfigError(f"{path}.storage", f"must be an SQLAlchemy URL such as {DEFAULT_STORAGE!r}, got {storage!r}")

    description = body.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{path}.description", "must be a string")

    return SweepSpec(
        name=name,
        description=description.strip(),
        dataset=dataset,
        data_dir=data_dir,
        epochs=epochs,
        hidden=tuple(hidden),
        fixed=dict(fixed),
        space=space,
        objectives=objectives,
        sampler=sampler,
        pruner=pruner,
        n_trials=_positive_int(body["n_trials"], f"{path}.n_trials"),
        trials_per_gpu=_positive_int(body.get("trials_per_gpu", 1), f"{path}.trials_per_gpu"),
        max_retries=_positive_int(body.get("max_retries", 2), f"{path}.max_retries", minimum=0),
        prefetch=_positive_int(body.get("prefetch", 1), f"{path}.prefetch", minimum=0),
        storage=storage,
        payload=payload,
    )


def _dataset_names() -> tuple[str, ...]:
    try:
        from sweep.data.registry import DATASETS
    except Exception:  # the data module is optional for validation; fall back to the contract's names
        return FALLBACK_DATASETS
    return tuple(DATASETS)


def _parse_space(space: Any, path: str, is_trainer: bool) -> dict[str, ParamSpec]:
    if not isinstance(space, dict) or not space:
        raise ConfigError(path, "must be a non-empty mapping of parameter -> range or choices")
    out = {}
    for name, body in space.items():
        where = f"{path}.{name}"
        if is_trainer and name not in TRAINER_KEYS:
            raise ConfigError(where, f"unknown trainer parameter{_closest(str(name), TRAINER_KEYS)}; searchable: {', '.join(TRAINER_KEYS)}")
        if is_trainer and name in ("dataset", "data_dir", "hidden", "device"):
            raise ConfigError(where, "cannot be searched; set it on the sweep instead")
        out[name] = _parse_param(name, body, where)
    return out


def _parse_param(name: str, body: Any, path: str) -> ParamSpec:
    if isinstance(body, list):
        body = {"choices": body}
    if not isinstance(body, dict):
        raise ConfigError(path, "must be {low, high[, log, step]} or {choices: [...]} (or a list of choices)")
    _no_unknown(body, PARAM_KEYS, path)
    per_layer = body.get("per_layer", False)
    if not isinstance(per_layer, bool):
        raise ConfigError(f"{path}.per_layer", "must be true or false")
    if per_layer and name != "sparsity":
        raise ConfigError(f"{path}.per_layer", "only sparsity can be searched per layer")

    if "choices" in body:
        extra = set(body) - {"choices", "per_layer", "type"}
        if extra:
            raise ConfigError(f"{path}.{sorted(extra)[0]}", "not allowed together with `choices`")
        choices = body["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{path}.choices", "must be a non-empty list")
        for i, choice in enumerate(choices):
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                raise ConfigError(f"{path}.choices[{i}]", f"must be a number, string, boolean or null, got {choice!r}")
            _check_domain(name, choice, f"{path}.choices[{i}]")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{path}.choices", "has duplicates")
        return ParamSpec(name, "categorical", choices=tuple(choices), per_layer=per_layer)

    for key in ("low", "high"):
        if key not in body:
            raise ConfigError(f"{path}.{key}", "required for a range (or give `choices`)")
    default_kind = PARAM_DOMAINS.get(name, ("float",))[0]
    kind = body.get("type", default_kind)
    if kind not in ("float", "int"):
        raise ConfigError(f"{path}.type", f"must be 'float' or 'int', got {kind!r}")
    low = _number(body["low"], f"{path}.low", integer=kind == "int")
    high = _number(body["high"], f"{path}.high", integer=kind == "int")
    if low > high:
        raise ConfigError(path, f"inverted range: low ({low}) > high ({high}); swap them")
    _check_domain(name, low, f"{path}.low")
    _check_domain(name, high, f"{path}.high")
    log = body.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{path}.log", "must be true or false")
    if log and low <= 0:
        raise ConfigError(f"{path}.low", f"a log range needs low > 0, got {low}")
    step = body.get("step")
    if step is not None:
        _number(step, f"{path}.step", integer=kind == "int")
        if step <= 0:
            raise ConfigError(f"{path}.step", f"must be > 0, got {step}")
        if log:
            raise ConfigError(f"{path}.step", "Optuna does not allow `step` together with `log: true`")
    return ParamSpec(name, kind, low=low, high=high, log=log, step=step, per_layer=per_layer)


def _parse_objectives(objectives: Any, path: str, is_trainer: bool) -> tuple[tuple[str, str], ...]:
    if isinstance(objectives, dict):
        objectives = [objectives]
    if not isinstance(objectives, list) or not objectives:
        raise ConfigError(path, "must be a list of {metric, direction}")
    out = []
    for i, objective in enumerate(objectives):
        where = f"{path}[{i}]"
        if not isinstance(objective, dict):
            raise ConfigError(where, "must be {metric: NAME, direction: maximize|minimize}")
        _no_unknown(objective, {"metric", "direction"}, where)
        metric, direction = objective.get("metric"), objective.get("direction")
        if not isinstance(metric, str) or (is_trainer and metric not in TRAINER_METRICS):
            raise ConfigError(f"{where}.metric", f"unknown metric {metric!r}; one of {', '.join(TRAINER_METRICS)}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"{where}.direction", f"must be 'maximize' or 'minimize', got {direction!r}")
        out.append((metric, direction))
    if len({m for m, _ in out}) != len(out):
        raise ConfigError(path, "the same metric appears twice")
    return tuple(out)


def _parse_choice_block(value: Any, table: dict[str, set], path: str, what: str) -> dict:
    """`tpe` or `{name: tpe, seed: 0, ...}` -> {"name": "tpe", ...options}."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(path, f"must be a {what} name or {{name: ..., options}}; {what}s: {', '.join(table)}")
    name = value["name"]
    if name not in table:
        raise ConfigError(f"{path}.name", f"unknown {what} {name!r}; one of {', '.join(table)}{_closest(str(name), table)}")
    _no_unknown(value, {"name"} | table[name], path)
    for key, option in value.items():
        if key != "name" and not (option is None or isinstance(option, (int, float, bool))):
            raise ConfigError(f"{path}.{key}", f"must be a number or boolean, got {option!r}")
    return dict(value)
