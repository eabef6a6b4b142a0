"""dashboards.thesis: table 4 on the accuracy/sparsity axes."""

import pytest

from dashboards.thesis import thesis_points


def test_mnist_rows():
    points = {p.label: (p.sparsity, p.accuracy) for p in thesis_points("mnist")}
    assert points == {"dense": (0.0, pytest.approx(0.9834)), "90%": (0.9, pytest.approx(0.973)),
                      "97%": (0.97, pytest.approx(0.9616)), "99%": (0.99, pytest.approx(0.9288))}


def test_higgs_mixed_row_lies_between_its_layer_settings():
    (mixed,) = [p for p in thesis_points("higgs") if p.label == "95-99-99-90%"]
    assert 0.95 < mixed.sparsity < 0.99 and mixed.accuracy == pytest.approx(0.7264)


@pytest.mark.parametrize("dataset", ["digits", "higgs-h2o-5k", None])
def test_no_rows_for_data_sets_the_thesis_did_not_use(dataset):
    assert thesis_points(dataset) == []
