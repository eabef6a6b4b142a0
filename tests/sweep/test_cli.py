"""The `sweep` command line of the platform: list, run, best, status; usage errors exit 2 and touch no database;
a driver killed with SIGKILL or stopped with Ctrl-C leaves a database that the next `sweep run` completes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState
from platform_helpers import REPO, states, sweep_cli, synthetic_sweep, trials_of, write_sweeps

from sweep.cli import main
from sweep.study import count_trials

pytestmark = pytest.mark.timeout(300)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def seeded_db(tmp_path):
    """A storage that already holds a study, to show that a bad command changes nothing in it."""
    db = tmp_path / "sweeps.db"
    study = optuna.create_study(study_name="existing", storage=f"sqlite:///{db}")
    study.tell(study.ask(), 1.0)
    return db


def test_list_shows_the_shipped_sweeps(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("quickstart", "fashion-tradeoff", "higgs-tradeoff", "fashion-per-layer"):
        assert name in out


def _bad(body_change):
    body = synthetic_sweep()
    body_change(body)
    return body


BAD_SWEEPS = [
    pytest.param(lambda b: b.update(colour="red"), "sweeps.s.colour: unknown key", id="unknown-key"),
    pytest.param(lambda b: b["space"].update(x={"low": 0.9, "high": 0.1}), "sweeps.s.space.x: inverted range",
                 id="inverted-range"),
    pytest.param(lambda b: b.update(dataset="imagenet", payload="sweep.trainer:train", space={"sparsity": [0.5]},
                                    objectives=[{"metric": "best_test_accuracy", "direction": "maximize"}]),
                 "sweeps.s.dataset: unknown data set 'imagenet'", id="unknown-dataset"),
    pytest.param(lambda b: b.update(sampler={"name": "cmaes-ish"}), "sweeps.s.sampler.name: unknown sampler",
                 id="unknown-sampler"),
]


@pytest.mark.parametrize("change,message", BAD_SWEEPS)
def test_bad_sweeps_file_exits_2_and_leaves_the_database_alone(tmp_path, seeded_db, capsys, change, message):
    path = write_sweeps(tmp_path / "bad.yaml", {"s": _bad(change)})
    before = digest(seeded_db)
    assert main(["run", "s", "--file", str(path), "--storage", f"sqlite:///{seeded_db}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("sweep run: error: ")
    assert digest(seeded_db) == before
    fresh = tmp_path / "fresh.db"
    assert main(["run", "s", "--file", str(path), "--storage", f"sqlite:///{fresh}"]) == 2
    assert not fresh.exists()


@pytest.mark.parametrize("argv,message", [
    (["run", "no-such-sweep"], "no sweep named 'no-such-sweep'"),
    (["run", "quickstart", "--gpus", "x"], "--gpus"),
    (["run", "quickstart", "--scheduler", "localhost:8786"], "tcp://HOST:PORT"),
    (["run", "quickstart", "--data-dir", "/no/such/dir"], "does not exist"),
    (["best", "no-such-study"], "no study named 'no-such-study'"),
])
def test_usage_errors_exit_2(tmp_path, seeded_db, capsys, argv, message):
    before = digest(seeded_db)
    assert main(argv + ["--storage", f"sqlite:///{seeded_db}"]) == 2
    assert message in capsys.readouterr().err
    assert digest(seeded_db) == before


@pytest.mark.parametrize("argv", [["status"], ["best", "quickstart"]])
def test_missing_database_is_a_usage_error_and_is_not_created(tmp_path, capsys, argv):
    db = tmp_path / "none.db"
    assert main(argv + ["--storage", f"sqlite:///{db}"]) == 2
    assert "no database at" in capsys.readouterr().err and not db.exists()


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as info:
        main(["run", "quickstart", "--n-trials", "0"])
    assert info.value.code == 2


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quickstart_completes_and_best_reports_it(tmp_path):
    """The README's first command, with the real trainer on digits, then `sweep best` and `sweep status`."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    run = sweep_cli("run", "quickstart", "--storage", url, "--cpu", cwd=tmp_path, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "cluster: cpu" in run.stderr and "dashboard http://127.0.0.1:" in run.stderr
    assert "sweep quickstart: 8/8 trials" in run.stdout and "idle time between trials" in run.stdout
    trials = trials_of(url, "quickstart")
    assert len(trials) == 8 and "RUNNING" not in states(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, [t.user_attrs.get("fail_reason") for t in trials]
    for t in complete:
        assert {"sparsity", "ttp", "k", "tau"} <= set(t.params)
        for key in ("best_test_accuracy", "ms_per_iteration", "inference_ms", "nnz", "test_accuracy", "config",
                    "command", "worker", "device", "attempt", "started_at", "finished_at"):
            assert key in t.user_attrs, key
        assert t.user_attrs["command"].startswith("sweep train")
    best = max(complete, key=lambda t: t.value)

    text = sweep_cli("best", "quickstart", "--storage", url, cwd=tmp_path)
    assert text.returncode == 0 and "best trial of quickstart" in text.stdout
    assert "best_test_accuracy (max)" in text.stdout and "sparsity" in text.stdout and "rerun: sweep train" in text.stdout
    machine = sweep_cli("best", "quickstart", "--storage", url, "--json", cwd=tmp_path)
    (record,) = json.loads(machine.stdout)["best"]
    assert record["number"] == best.number and record["values"]["best_test_accuracy"] == best.value
    assert record["params"] == best.params and record["metrics"]["nnz"] == best.user_attrs["nnz"]

    status = sweep_cli("status", "--storage", url, "--json", cwd=tmp_path)
    (study,) = json.loads(status.stdout)["studies"]
    assert study["study"] == "quickstart" and study["counts"]["counted"] == 8 and study["counts"]["running"] == 0
    # plain Optuna RDB storage: Optuna's own CLI reads it
    optuna_cli = subprocess.run([sys.executable, "-c", "import sys; from optuna.cli import main; sys.exit(main())",
                                 "trials", "--study-name", "quickstart", "--storage", url, "-f", "json"],
                                capture_output=True, text=True, timeout=120)
    assert optuna_cli.returncode == 0, optuna_cli.stderr[-2000:]
    assert len(json.loads(optuna_cli.stdout)) == 8


def _start_driver(tmp_path, sweeps_file, url, *extra):
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sweep", "run", "s", "--file", str(sweeps_file), "--storage", url,
                             "--cpu", "--workers", "2", "--no-progress", *extra], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, log


def _wait_for_complete(url, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the driver ended before it could be stopped"
        try:
            done = [t for t in trials_of(url, "s") if t.state == TrialState.COMPLETE]
            if len(done) >= n:
                return
        except KeyError:  # the study does not exist yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} trials completed in {timeout} s")


def _reap(proc, log):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the workers the killed driver had started (its own session)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    log.close()


@pytest.mark.slow
def test_driver_killed_with_sigkill_resumes_and_completes(tmp_path):
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    sweeps_file = write_sweeps(tmp_path / "sweeps.yaml", {"s": synthetic_sweep(n_trials=8, epochs=4,
                                                                               fixed={"sleep": 0.25})})
    proc, log = _start_driver(tmp_path, sweeps_file, url)
    try:
        _wait_for_complete(url, 2, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _reap(proc, log)
    assert proc.returncode == -signal.SIGKILL
    left = trials_of(url, "s")
    orphaned = [t.number for t in left if t.state == TrialState.RUNNING]
    assert orphaned and count_trials(left).counted < 8

    rerun = sweep_cli("run", "s", "--file", sweeps_file, "--storage", url, "--cpu", "--workers", "2",
                      "--no-progress", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"RUNNING trial(s) left by a previous driver marked FAIL" in rerun.stderr
    trials = trials_of(url, "s")
    counts = count_trials(trials)
    assert counts.counted == 8 and counts.complete == 8 and counts.running == 0 and counts.waiting == 0
    by_number = {t.number: t for t in trials}
    for number in orphaned:
        t = by_number[number]
        assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("orphaned")
        (retry,) = [r for r in trials if r.user_attrs.get("retry_of") == number]
        assert retry.state == TrialState.COMPLETE
        # A driver killed between `ask` and the trial's suggestions leaves a RUNNING trial with no params yet;
        # its retry then draws its own. Otherwise the retry reruns exactly the lost parameters.
        if t.params:
            assert retry.params == t.params


@pytest.mark.slow
def test_ctrl_c_tells_running_trials_fail_and_exits_130(tmp_path):
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    sweeps_file = write_sweeps(tmp_path / "sweeps.yaml", {"s": synthetic_sweep(n_trials=20, epochs=4,
                                                                               fixed={"sleep": 0.25})})
    proc, log = _start_driver(tmp_path, sweeps_file, url)
    try:
        _wait_for_complete(url, 1, proc)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=90)
    finally:
        _reap(proc, log)
    output = (tmp_path / "driver.log").read_text()
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted; running trials were marked FAIL" in output
    trials = trials_of(url, "s")
    assert "RUNNING" not in states(trials)
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["fail_reason"].startswith("interrupted") for t in stopped)
    assert all(t.user_attrs["infra_fault"] and not t.user_attrs["gave_up"] for t in stopped)
