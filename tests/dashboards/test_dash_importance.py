"""dashboards.importance: fANOVA importances, and a message instead of numbers where there is nothing to say."""

import pytest

from dashboards.importance import param_importances
from dashboards.study import load_sweep
from dash_fixtures import made_studies  # noqa: F401 - fixtures


def test_importances_sum_to_one_per_objective(made_studies):
    data = load_sweep("multi", made_studies)
    results = param_importances(data, data.study)
    assert [r.objective for r in results] == ["best_test_accuracy", "ms_per_iteration"]
    for result in results:
        assert result.message is None
        assert set(result.values) == {"sparsity", "lr", "optimizer"}
        assert sum(result.values.values()) == pytest.approx(1.0)
        assert list(result.values.values()) == sorted(result.values.values(), reverse=True)
    # The made-up time per iteration depends on sparsity alone (dash_studies._metrics).
    assert next(iter(results[1].values)) == "sparsity"


@pytest.mark.parametrize("name, reason", [("one-trial", "at least 3 completed trials"),
                                          ("all-failed", "at least 3 completed trials")])
def test_too_few_trials_give_a_message(made_studies, name, reason):
    data = load_sweep(name, made_studies)
    (result,) = param_importances(data, data.study)
    assert result.values == {} and reason in result.message


def test_a_single_param_still_gets_its_importance(made_studies):
    data = load_sweep("one-param", made_studies)
    (result,) = param_importances(data, data.study)
    assert result.message is None and result.values == {"sparsity": pytest.approx(1.0)}
