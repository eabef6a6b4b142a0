"""SparseMLP: the thesis's network shapes, per-layer sparsity, and a short real training run with evolution."""

import pytest
import torch
from torch import nn

from sparselayer import SparseLinear, SparseMLP, TopologyEvolver

from conftest import DEVICES, DTYPES


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_thesis_higgs_network_with_per_layer_sparsity(device, dtype):
    model = SparseMLP([28, 200, 200, 200, 2], [0.95, 0.99, 0.99, 0.9], device=device, dtype=dtype)
    layers = list(model.layers)
    assert all(isinstance(m, SparseLinear) for m in layers) and len(model.sparse_layers()) == 4
    assert [m.nnz for m in layers] == [200 * 1, 200 * 2, 200 * 2, 2 * 20]  # round(n_in * density) per neuron
    y = model(torch.randn(5, 28, device=device, dtype=dtype))
    assert y.shape == (5, 2) and y.dtype == dtype
    assert bool(((y > 0) & (y < 1)).all())  # sigmoid output
    assert model.nnz == 200 + 400 + 400 + 40
    assert model.overall_sparsity == pytest.approx(1 - 1040 / (28 * 200 + 2 * 200 * 200 + 200 * 2))


def test_dense_layers_where_sparsity_is_none_or_zero():
    model = SparseMLP([64, 32, 16, 10], [None, 0, 0.9], output_activation=None)
    first, second, third = model.layers
    assert type(first) is nn.Linear and type(second) is nn.Linear and isinstance(third, SparseLinear)
    assert first.weight.std().item() == pytest.approx(2 / (64 + 32) ** 0.5, rel=0.1)  # thesis Xavier
    assert bool((first.bias == 0).all())
    dense = SparseMLP([64, 32, 10], None)
    assert not dense.sparse_layers() and dense.overall_sparsity == 0.0


def test_images_are_flattened_and_activations_applied():
    model = SparseMLP([784, 16, 10], 0.9, output_activation=None, hidden_activation="relu")
    assert model(torch.randn(3, 28, 28)).shape == (3, 10)
    hidden = model.hidden_activation(model.layers[0](torch.randn(3, 784)))
    assert bool((hidden >= 0).all())


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"sizes": [784]}, ValueError, "sizes must list at least 2"),
        ({"sizes": [784, 0, 10]}, ValueError, "sizes must list at least 2 positive"),
        ({"sizes": [784, 10], "sparsity": [0.9, 0.9]}, ValueError, "sparsity lists 2 values but the network has 1"),
        ({"sizes": [784, 10], "sparsity": 1.0}, ValueError, r"sparsity must be in \[0, 1\)"),
        ({"sizes": [784, 10], "sparsity": "high"}, TypeError, "sparsity must be a float"),
        ({"sizes": [784, 10], "output_activation": "softmax"}, ValueError, "output_activation must be one of"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, error, message):
    with pytest.raises(error, match=message):
        SparseMLP(**kwargs)


def test_wrong_input_width_is_rejected():
    with pytest.raises(ValueError, match=r"expects inputs \(batch, 64\), got shape \(2, 63\)"):
        SparseMLP([64, 10], 0.5)(torch.randn(2, 63))


def test_training_on_digits_with_evolution_learns():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    torch.manual_seed(0)
    model = SparseMLP([64, 128, 128, 10], 0.8, generator=torch.Generator().manual_seed(0))
    batch = 64
    lr = 1 / (2 * batch)  # the thesis's rate for a summed MSE loss
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    evolver = TopologyEvolver(model, opt, ttp=0.01)
    nnz = model.nnz
    for epoch in range(1, 9):
        for i in range(0, len(x_train), batch):
            target = nn.functional.one_hot(y_train[i : i + batch], 10).float()
            loss = (model(x_train[i : i + batch]) - target).square().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        stats = evolver.step(epoch, lr)
        assert [s["grown"] for s in stats] == [s["removed"] for s in stats]
    assert sum(s["removed"] for s in stats) > 0 and model.nnz == nnz
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.75  # chance is 0.1; 0.81 after these 8 epochs
