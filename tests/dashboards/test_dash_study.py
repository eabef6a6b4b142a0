"""dashboards.study: reading a sweep's study, Pareto fronts, best trials, failure reasons."""

import pytest

from dashboards.study import Objective, StudyNotFound, TrialRecord, load_sweep, pareto_front, pareto_front_2d
from dash_fixtures import made_studies  # noqa: F401 - fixtures


def _trial(number, values):
    return TrialRecord(number, "COMPLETE", list(values), {}, {}, 1.0)


def test_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path):
    path = tmp_path / "nowhere.db"
    with pytest.raises(StudyNotFound, match="sweep run"):
        load_sweep("quickstart", f"sqlite:///{path}")
    assert not path.exists()


def test_unknown_sweep_lists_the_ones_there(made_studies):
    with pytest.raises(StudyNotFound, match="all-failed"):
        load_sweep("no-such-sweep", made_studies)


def test_load_reads_objectives_states_and_reasons(made_studies):
    data = load_sweep("mnist", made_studies)
    assert data.objectives == [Objective("best_test_accuracy", "maximize")]
    assert data.dataset == "mnist"
    counts = data.state_counts()
    assert (counts["COMPLETE"], counts["FAIL"]) == (12, 2)
    reasons = data.failure_reasons()
    assert sum(count for _, count, _ in reasons) == 2
    assert {r for r, _, _ in reasons} == {"diverged: loss is NaN at epoch 2", "worker died (tcp://127.0.0.1:1234)"}


def test_best_trials_are_sorted_by_the_objective(made_studies):
    data = load_sweep("mnist", made_studies)
    best = data.best_trials(5)
    values = [t.values[0] for t in best]
    assert values == sorted(values, reverse=True)
    assert values[0] == max(t.values[0] for t in data.completed)


def test_multi_objective_best_trials_start_with_the_pareto_front(made_studies):
    data = load_sweep("multi", made_studies)
    front = {t.number for t in pareto_front(data.completed, data.objectives)}
    best = data.best_trials(len(data.completed))
    assert {t.number for t in best[: len(front)]} == front


def test_pareto_front_mixed_directions():
    objectives = [Objective("acc", "maximize"), Objective("ms", "minimize")]
    trials = [_trial(0, (0.9, 5.0)), _trial(1, (0.8, 1.0)), _trial(2, (0.85, 6.0)), _trial(3, (0.9, 4.0))]
    assert sorted(t.number for t in pareto_front(trials, objectives)) == [1, 3]


def test_pareto_staircase_keeps_only_improvements():
    points = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.7), (3.0, 0.6), (4.0, 0.7), (5.0, 0.9)]
    assert pareto_front_2d(points) == [(1.0, 0.5), (3.0, 0.7), (5.0, 0.9)]
