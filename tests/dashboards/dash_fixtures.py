"""Fixtures of the dashboards tests: a real short quickstart sweep, hand-made corner-case studies, Chromium.

Test modules import these fixtures by name. This is not a conftest.py: the other test folders do
`from conftest import DEVICES`, and a second conftest module would take that name in sys.modules. Fixtures imported
into several modules are several fixture definitions, so the expensive ones keep their result in `_made` to run
once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest

from dashboards.browser import find_chromium

import dash_studies as studies

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART_TRIALS = 4
_made: dict[str, object] = {}


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory) -> tuple[str, str]:
    """(storage URL, sweep name) of a real `sweep run quickstart` (4 trials, CPU workers), run once per session."""
    if "quickstart" not in _made:
        _made["quickstart"] = _run_quickstart(tmp_path_factory)
    return _made["quickstart"]


def _run_quickstart(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("quickstart")
    storage = _sqlite(folder / "sweeps.db")
    command = [sys.executable, "-m", "sweep", "run", "quickstart", "--storage", storage, "--cpu", "--workers", "2",
               "--n-trials", str(QUICKSTART_TRIALS), "--file", str(ROOT / "sweep" / "sweeps.yaml"), "--no-progress"]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return storage, "quickstart"


@pytest.fixture(scope="session")
def made_studies(tmp_path_factory) -> str:
    """A storage with the corners a short real sweep does not reach (names: see below)."""
    if "made" not in _made:
        _made["made"] = _make_studies(tmp_path_factory)
    return _made["made"]


def _make_studies(tmp_path_factory) -> str:
    storage = _sqlite(tmp_path_factory.mktemp("made") / "studies.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        studies.create(storage, "empty", [studies.OBJECTIVE_ACC])
        studies.add_trials(studies.create(storage, "all-failed", [studies.OBJECTIVE_ACC]), 0, n_failed=3)
        studies.add_trials(studies.create(storage, "mnist", [studies.OBJECTIVE_ACC], dataset="mnist"), 12, n_failed=2)
        studies.add_trials(studies.create(storage, "multi", [studies.OBJECTIVE_ACC, studies.OBJECTIVE_TIME]), 12,
                           n_failed=1, params=("sparsity", "lr", "optimizer"))
        studies.add_trials(studies.create(storage, "one-trial", [studies.OBJECTIVE_ACC]), 1)
        studies.add_trials(studies.create(storage, "one-param", [studies.OBJECTIVE_ACC]), 5, params=("sparsity",))
        bare = studies.create(storage, "bare", [{"metric": "loss", "direction": "minimize"}])
        bare.add_trials([optuna.trial.create_trial(value=float(v), params={"x": v},
                                                   distributions={"x": optuna.distributions.IntDistribution(0, 9)})
                         for v in range(5)])  # another payload: no trainer metrics at all
    return storage


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    return path
