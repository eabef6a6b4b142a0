"""Shared helpers of the sweep-platform tests: sweeps files with the synthetic payload, CLI subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

REPO = Path(__file__).resolve().parents[2]


def synthetic_sweep(**overrides) -> dict:
    """A sweep of `sweep.payloads:synthetic` (score = 1 - (x - 0.3)^2): exercises the platform, not the trainer."""
    sweep = {
        "dataset": "digits",
        "epochs": 2,
        "payload": "sweep.payloads:synthetic",
        "fixed": {"sleep": 0.05},
        "space": {"x": {"low": 0.0, "high": 1.0}},
        "objectives": [{"metric": "score", "direction": "maximize"}],
        "sampler": {"name": "random", "seed": 0},
        "n_trials": 6,
        "max_retries": 2,
    }
    for key, value in overrides.items():
        if key == "fixed":
            sweep["fixed"] = {**sweep["fixed"], **value}
        else:
            sweep[key] = value
    return sweep


def write_sweeps(path: Path, sweeps: dict) -> Path:
    path.write_text(yaml.safe_dump({"sweeps": sweeps}, sort_keys=False))
    return path


def sweep_cli(*args, cwd=None, timeout=240, env=None) -> subprocess.CompletedProcess:
    """`python -m sweep ARGS` in a subprocess (a real CLI run: argument parsing, exit status, stdout/stderr)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "sweep", *map(str, args)], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def trials_of(storage_url: str, name: str):
    return optuna.load_study(study_name=name, storage=storage_url).get_trials(deepcopy=False)


def states(trials) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out
