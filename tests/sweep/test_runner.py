"""The ask-and-tell driver on a real LocalCluster of processes and a real SQLite file: verdicts, pruning, a worker
killed mid-trial, two sweeps in one storage. The payload is `sweep.payloads:synthetic` (the platform is tested)."""

from __future__ import annotations

import os
import signal
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState
from platform_helpers import states, synthetic_sweep

from sweep.cluster import SweepWorkerPlugin, start_cluster
from sweep.config import parse_sweeps
from sweep.runner import SweepRunner, run_sweep
from sweep.study import count_trials

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def client():
    with start_cluster(n_workers=2, threads_per_worker=1, plugin=SweepWorkerPlugin(torch_threads=1),
                       force_cpu=True, timeout=60, quiet=True) as (client, _):
        yield client


def spec_of(name="s", **overrides):
    return parse_sweeps({"sweeps": {name: synthetic_sweep(**overrides)}}).sweeps[name]


def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'sweeps.db'}"


def test_sweep_completes_and_records_metrics(client, tmp_path):
    url = storage(tmp_path)
    result = run_sweep(spec_of(n_trials=6), client, url)
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    assert states(trials) == {"COMPLETE": 6}
    assert result.counts.counted == 6 and result.trials_this_run == 6
    for t in trials:
        a = t.user_attrs
        assert t.values[0] == pytest.approx(1 - (t.params["x"] - 0.3) ** 2)
        assert a["score"] == t.values[0] and a["test_accuracy"] and a["attempt"] == 1
        assert a["config"]["x"] == t.params["x"] and a["config"]["dataset"] == "digits"
        assert a["worker"].startswith("tcp://127.0.0.1:") and a["started_at"] <= a["finished_at"]
        assert a["run_id"] == result.run_id
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers were used
    assert result.idle.all_gaps and all(g >= 0 for g in result.idle.all_gaps)
    study = optuna.load_study(study_name="s", storage=url)
    assert study.user_attrs["sweep"]["name"] == "s" and study.metric_names == ["score"]
    # a second run of the same sweep has nothing left to do
    again = run_sweep(spec_of(n_trials=6), client, url)
    assert again.trials_this_run == 0 and len(study.get_trials()) == 6


def test_raising_and_diverging_trials_fail_with_their_reason(client, tmp_path):
    url = storage(tmp_path)
    spec = spec_of(n_trials=8, fixed={"raise_above": 0.75, "diverge_above": 0.5})
    run_sweep(spec, client, url)
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    assert count_trials(trials).counted == 8 and len(trials) == 8  # failures count: no rerun of a verdict
    for t in trials:
        x = t.params["x"]
        if x > 0.75:
            assert t.state == TrialState.FAIL and "ValueError: synthetic failure" in t.user_attrs["fail_reason"]
            assert "traceback" in t.user_attrs
        elif x > 0.5:
            assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("diverged: loss became NaN")
        else:
            assert t.state == TrialState.COMPLETE
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.COMPLETE}
    assert not any(t.user_attrs.get("infra_fault") for t in trials)


def test_single_objective_sweeps_prune_from_intermediate_values(client, tmp_path):
    url = storage(tmp_path)
    # percentile 99.9 with one startup trial prunes every trial that reports worse than the best so far
    spec = spec_of(n_trials=8, epochs=6, fixed={"sleep": 0.15}, prefetch=0,
                   pruner={"name": "percentile", "percentile": 99.9, "n_startup_trials": 1, "n_warmup_steps": 0})
    run_sweep(spec, client, url)
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, states(trials)
    assert all(len(t.user_attrs.get("test_accuracy", [])) < 6 for t in pruned)  # stopped early
    assert all(t.intermediate_values for t in trials)
    assert count_trials(trials).counted == 8 and "RUNNING" not in states(trials)


def test_multi_objective_sweeps_store_the_pareto_front(client, tmp_path):
    url = storage(tmp_path)
    spec = spec_of(n_trials=6, sampler={"name": "nsga2", "seed": 0},
                   objectives=[{"metric": "score", "direction": "maximize"},
                               {"metric": "ms_per_iteration", "direction": "minimize"}])
    run_sweep(spec, client, url)
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.directions) == 2 and study.best_trials
    assert states(study.get_trials()) == {"COMPLETE": 6}


def test_two_sweeps_in_one_storage_stay_separate(client, tmp_path):
    url = storage(tmp_path)
    run_sweep(spec_of("a", n_trials=3, fixed={"tag": "a"}), client, url)
    run_sweep(spec_of("b", n_trials=4, fixed={"tag": "b"}, space={"x": {"low": 0.5, "high": 0.6}}), client, url)
    run_sweep(spec_of("a", n_trials=5, fixed={"tag": "a"}), client, url)  # resume a after b
    a = optuna.load_study(study_name="a", storage=url).get_trials()
    b = optuna.load_study(study_name="b", storage=url).get_trials()
    assert len(a) == 5 and len(b) == 4
    assert {t.user_attrs["config"]["tag"] for t in a} == {"a"} and {t.user_attrs["config"]["tag"] for t in b} == {"b"}
    assert all(0.5 <= t.params["x"] <= 0.6 for t in b)


def test_a_worker_killed_mid_trial_costs_only_that_trial(client, tmp_path):
    url = storage(tmp_path)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    spec = spec_of(n_trials=4, epochs=8, fixed={"sleep": 0.25, "pid_dir": str(pid_dir)})
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", run_sweep(spec, client, url)), daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not list(pid_dir.glob("*.pid")) and time.time() < deadline:
        time.sleep(0.05)
    victim = int(next(pid_dir.glob("*.pid")).read_text())
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=200)
    assert not thread.is_alive(), "the sweep did not finish after a worker was killed"
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    lost = [t for t in trials if t.user_attrs.get("infra_fault")]
    assert lost and all(t.state == TrialState.FAIL and "worker lost" in t.user_attrs["fail_reason"] for t in lost)
    assert all(t.user_attrs["pid"] == victim for t in lost if "pid" in t.user_attrs)
    for t in lost:  # rerun with the same parameters as a new trial
        (retry,) = [r for r in trials if r.user_attrs.get("retry_of") == t.number]
        assert retry.params == t.params and retry.user_attrs["attempt"] == 2 and retry.state == TrialState.COMPLETE
        assert retry.user_attrs["pid"] != victim
    counts = count_trials(trials)
    assert counts.counted == 4 and counts.complete == 4 and counts.running == 0 and counts.retried == len(lost)
    # the nanny restarted the worker: the cluster is whole again
    client.wait_for_workers(2, timeout=60)


def test_a_cuda_error_restarts_the_worker_and_gives_up_after_max_retries(client, tmp_path):
    url = storage(tmp_path)
    spec = spec_of(n_trials=2, max_retries=1, space={"x": {"choices": [0.2, 0.9]}}, sampler="grid",
                   fixed={"cuda_error_above": 0.5})
    pids_before = set(client.run(os.getpid).values())
    run_sweep(spec, client, url)
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    story = [(t.number, t.state.name, t.params, t.user_attrs.get("attempt"), t.user_attrs.get("fail_reason"))
             for t in trials]
    faulty = sorted((t for t in trials if t.params["x"] == 0.9), key=lambda t: t.number)
    assert [t.user_attrs["attempt"] for t in faulty] == [1, 2], story  # one retry, then it counts as a failure
    assert all(t.state == TrialState.FAIL and t.user_attrs["infra_fault"] for t in faulty)
    assert "CUDA error" in faulty[0].user_attrs["fail_reason"] and not faulty[0].user_attrs["gave_up"]
    assert faulty[1].user_attrs["gave_up"] and "gave up after 2 attempts" in faulty[1].user_attrs["fail_reason"]
    assert faulty[1].user_attrs["retry_of"] == faulty[0].number
    counts = count_trials(trials)
    assert counts.counted == 2 and counts.complete == 1 and counts.failed == 1 and counts.running == 0, story
    client.wait_for_workers(2, timeout=60)
    pids_after = set(client.run(os.getpid).values())
    assert pids_after != pids_before, (pids_before, pids_after, story)  # the faulty workers were replaced


def test_a_trial_killed_by_the_restart_after_another_trials_cuda_error_runs_again_as_itself(tmp_path):
    # One worker holds two trials (one running, one prefetched): the faulty one fails at once, the healthy one
    # starts, and the restart that clears the CUDA context kills it. That is not the healthy trial's fault.
    url = storage(tmp_path)
    spec = spec_of(n_trials=2, max_retries=0, epochs=8, fixed={"sleep": 0.25, "cuda_error_above": 0.5})
    with start_cluster(n_workers=1, threads_per_worker=1, plugin=SweepWorkerPlugin(torch_threads=1),
                       force_cpu=True, timeout=60, quiet=True) as (client, _):
        runner = SweepRunner(spec, url, progress=False)
        runner.prepare()
        runner.study.enqueue_trial({"x": 0.9})  # faulty first, so the healthy one is behind it on the worker
        runner.study.enqueue_trial({"x": 0.2})
        result = runner.run(client)
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    story = [(t.number, t.state.name, t.params, t.user_attrs.get("resubmitted"), t.user_attrs.get("fail_reason"))
             for t in trials]
    assert len(trials) == 2, story  # no retry record: the healthy trial was sent again, not failed
    faulty, healthy = sorted(trials, key=lambda t: t.params["x"], reverse=True)
    assert faulty.state == TrialState.FAIL and "CUDA error" in faulty.user_attrs["fail_reason"], story
    assert healthy.state == TrialState.COMPLETE and healthy.user_attrs["attempt"] == 1, story
    assert healthy.user_attrs["resubmitted"] == 1, story  # it really was killed once by the restart
    assert healthy.user_attrs["pid"] != faulty.user_attrs["pid"]  # and finished on the fresh process
    assert result.counts.complete == 1 and result.counts.failed == 1 and result.counts.retried == 0


def test_per_layer_sparsity_reaches_the_payload_as_a_list(client, tmp_path):
    url = storage(tmp_path)
    spec = spec_of(n_trials=2, hidden=[8, 8], space={"x": {"low": 0.0, "high": 1.0},
                                                     "sparsity": {"low": 0.8, "high": 0.99, "per_layer": True}})
    run_sweep(spec, client, url)
    for t in optuna.load_study(study_name="s", storage=url).get_trials():
        assert t.state == TrialState.COMPLETE
        layers = [t.params[f"sparsity_{i}"] for i in range(3)]
        assert t.user_attrs["config"]["sparsity"] == layers and all(0.8 <= s <= 0.99 for s in layers)


@pytest.mark.parametrize("slots,starts,ends,gaps", [
    (1, [0, 5, 11], [4, 10, 12], [1, 1]),          # one slot: next start - previous end
    (2, [0, 0, 3, 7], [3, 6, 8, 9], [0, 1]),        # two slots: the 3rd start waits for the 1st end, ...
    (1, [0], [1], []),                              # a single trial has no gap
])
def test_idle_gaps_per_worker(slots, starts, ends, gaps):
    from sweep.progress import idle_gaps

    records = [{"worker": "w", "started_at": s, "finished_at": e} for s, e in zip(starts, ends)]
    records.append({"worker": "other", "started_at": 100, "finished_at": 101})
    summary = idle_gaps(records, slots)
    assert summary.gaps["w"] == gaps and summary.gaps["other"] == []
