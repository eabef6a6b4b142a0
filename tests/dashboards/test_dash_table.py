"""dashboards.table: the best configurations with their parameters, metrics and rerun command."""

from dashboards.study import load_sweep
from dashboards.table import best_table
from dash_fixtures import made_studies  # noqa: F401 - fixtures


def test_table_has_params_metrics_and_commands_best_first(made_studies):
    data = load_sweep("mnist", made_studies)
    table = best_table(data, limit=5)
    assert len(table.rows) == 5
    for column in ("best_test_accuracy (max)", "ms / iteration", "sparsity (%)", "lr", "sparsity", "rerun command"):
        assert column in table.columns
    objective = table.columns.index("best_test_accuracy (max)")
    values = [row[objective].sort for row in table.rows]
    assert values == sorted(values, reverse=True)
    command = table.columns.index("rerun command")
    assert all(row[command].text.startswith("sweep train ") for row in table.rows)
    assert table.numeric[table.columns.index("lr")] and not table.numeric[command]


def test_multi_objective_table_shows_both_objectives(made_studies):
    table = best_table(load_sweep("multi", made_studies), limit=50)
    assert {"best_test_accuracy (max)", "ms_per_iteration (min)", "optimizer"} <= set(table.columns)
    assert len(table.rows) == 12


def test_no_completed_trial_gives_an_empty_table(made_studies):
    assert best_table(load_sweep("all-failed", made_studies), limit=5).rows == []
