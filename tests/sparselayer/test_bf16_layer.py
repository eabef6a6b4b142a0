"""bf16-activation mode of SparseLinear, SparseMLP and the evolver: bf16 inputs or bf16 autocast, fp32 weights."""

import copy

import pytest
import torch
from torch import nn

from sparselayer import SparseLinear, SparseMLP, TopologyEvolver
from sparselayer.csr import row_indices, validate_csr

from conftest import DEVICES
from csr_cases import assert_bf16_close, random_csr, tolerances

BF16, F32 = torch.bfloat16, torch.float32
# bf16 against fp32 results: every input and the output carry bf16 rounding (2**-8 relative each), summed
# over many terms; a computation in the wrong dtype (fp32 or fp16 where bf16 was due) shows up in the dtype
# asserts, not in this tolerance.
LOOSE = 2.0**-5


def _layer(device, dtype=F32, case=(7, 96, 333, 2), seed=0):
    n_out, n_in, nnz, n_empty = case
    crow, col, values = random_csr(n_out, n_in, nnz, n_empty, dtype=dtype, device=device, seed=seed)
    bias = torch.randn(n_out, dtype=dtype, device=device)
    return SparseLinear.from_csr(crow, col, values, (n_out, n_in), bias=bias)


def _sampled(layer, dense):
    return dense[row_indices(layer.crow_indices, layer.nnz), layer.col_indices]


def _scale(t):
    return t.detach().abs().max().item()


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_input_without_autocast(device):
    layer = _layer(device)
    x = torch.randn(2, 3, 96, device=device).to(BF16).requires_grad_()
    y = layer(x)
    assert y.shape == (2, 3, 7) and y.dtype == BF16
    w64, b64 = layer.to_dense().double(), layer.bias.detach().double()
    product = x.detach().double() @ w64.T
    assert_bf16_close(y, product + b64, scale=max(_scale(product), _scale(product + b64)))
    g = torch.randn_like(y)
    y.backward(g)
    assert x.grad.dtype == BF16 and layer.values.grad.dtype == F32 and layer.bias.grad.dtype == F32
    g64, x64 = g.double().reshape(6, 7), x.detach().double().reshape(6, 96)
    assert_bf16_close(x.grad, (g64 @ w64).reshape(2, 3, 96))
    torch.testing.assert_close(layer.values.grad, _sampled(layer, g64.T @ x64).float(), **tolerances(F32))
    torch.testing.assert_close(layer.bias.grad, g64.sum(0).float(), **tolerances(F32))


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_matches_the_fp32_layer(device):
    layer = _layer(device)
    reference = copy.deepcopy(layer)
    dense = nn.Linear(96, 7, device=device)
    x = torch.randn(5, 96, device=device)
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast(device, dtype=BF16):
        y = layer(xs)
        assert y.dtype == dense(x).dtype == BF16  # as nn.Linear under the same autocast
    y_ref = reference(xr)
    assert_bf16_close(y, y_ref, rtol=LOOSE)
    g = torch.randn(5, 7, device=device)
    (y.float() * g).sum().backward()
    (y_ref * g).sum().backward()
    assert xs.grad.dtype == F32  # the cast to bf16 is part of the graph, as under autocast's own casts
    for got, want in ((xs.grad, xr.grad), (layer.values.grad, reference.values.grad), (layer.bias.grad, reference.bias.grad)):
        assert got.dtype == F32
        torch.testing.assert_close(got, want, rtol=0.0, atol=LOOSE * _scale(want))


@pytest.mark.parametrize("device", DEVICES)
def test_float16_autocast_runs_in_float32(device):
    layer = _layer(device)
    x = torch.randn(5, 96, device=device)
    expected = layer(x)
    with torch.autocast(device, dtype=torch.float16):
        y = layer(x)
        y_half_input = layer(x.half())  # e.g. the output of an nn.Linear under the same autocast
    assert y.dtype == y_half_input.dtype == F32
    assert torch.equal(y, expected)
    torch.testing.assert_close(y_half_input, layer(x.half().float()))
    with pytest.raises(TypeError, match="x is torch.float16 but the weight values are torch.float32"):
        layer(x.half())  # outside autocast nothing casts float16


@pytest.mark.parametrize("device", DEVICES)
def test_float64_layer_ignores_bf16_autocast(device):
    layer = _layer(device, torch.float64)
    x = torch.randn(5, 96, device=device, dtype=torch.float64)
    with torch.autocast(device, dtype=BF16):
        y = layer(x)
    assert y.dtype == torch.float64 and torch.equal(y, layer(x))
    with pytest.raises(TypeError, match="use bfloat16 activations with float32 values"):
        layer(x.to(BF16))


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_mlp_under_bf16_autocast(device):
    torch.manual_seed(0)
    model = SparseMLP([20, 30, 30, 5], [0.7, None, 0.5], device=device)  # sparse, dense, sparse
    reference = SparseMLP([20, 30, 30, 5], [0.7, None, 0.5], device=device)
    reference.load_state_dict(model.state_dict())
    x = torch.randn(16, 20, device=device)
    with torch.autocast(device, dtype=BF16):
        y = model(x)
    assert y.dtype == BF16
    assert_bf16_close(y, reference(x), rtol=LOOSE)
    y.float().square().sum().backward()
    reference(x).square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert p.grad.dtype == F32, name
        torch.testing.assert_close(p.grad, q.grad, rtol=0.0, atol=4 * LOOSE * _scale(q.grad), msg=name)


@pytest.mark.parametrize("autocast", [False, True], ids=["bf16-input", "autocast"])
@pytest.mark.parametrize("device", DEVICES)
def test_gradient_growth_after_a_bf16_backward(device, autocast):
    layer = _layer(device)
    with torch.no_grad():
        layer.values[::10] *= 1e-3  # below tau: these are removed and regrown
    optimizer = torch.optim.SGD(layer.parameters(), lr=1e-6, momentum=0.9)  # keeps the small weights small
    evolver = TopologyEvolver(layer, optimizer, tau=0.01, prune_dead=True)
    x = torch.randn(8, 96, device=device)
    with torch.autocast(device, dtype=BF16, enabled=autocast):
        y = layer(x if autocast else x.to(BF16))
    assert y.dtype == BF16
    y.float().square().sum().backward()
    optimizer.step()
    nnz = layer.nnz
    lr = 0.05
    x_seen, g_seen = (evolver._states[0].x.double(), evolver._states[0].grad_y.double())
    old = set(zip(row_indices(layer.crow_indices, nnz).tolist(), layer.col_indices.tolist()))
    with torch.autocast(device, dtype=BF16, enabled=autocast):  # a loop run entirely under autocast
        (stats,) = evolver.step(1, lr)
    assert stats["grown"] == stats["removed"] > 0 and layer.nnz == nnz
    assert layer.values.dtype == F32 and optimizer.state[layer.values]["momentum_buffer"].dtype == F32
    validate_csr(layer.crow_indices, layer.col_indices, (7, 96), layer.values)
    validate_csr(layer.csc_col_ptr, layer.csc_row, (96, 7), layer.values[layer.csc_perm])
    # the new weights are -lr * (grad_y^T @ x) at their positions, from the captured bf16 (or fp32) batch
    rows = row_indices(layer.crow_indices, layer.nnz)
    new = torch.tensor([(r, c) not in old for r, c in zip(rows.tolist(), layer.col_indices.tolist())], device=device)
    expected = -lr * (g_seen.T @ x_seen)[rows[new], layer.col_indices[new]]
    torch.testing.assert_close(layer.values.detach()[new].double(), expected, rtol=1e-5, atol=1e-7)
    with torch.autocast(device, dtype=BF16, enabled=autocast):
        layer(x if autocast else x.to(BF16)).float().sum().backward()  # the evolved layer still trains


def test_torch_compile_of_a_bf16_model():
    torch._dynamo.reset()
    model = nn.Sequential(SparseLinear(20, 16, 0.7), nn.ReLU(), SparseLinear(16, 3, 0.5))
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(8, 20)
    with torch.autocast("cpu", dtype=BF16):
        expected = model(x)
        y = compiled(x)
    assert y.dtype == expected.dtype == BF16
    assert_bf16_close(y, expected.double())
    y.float().square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected.float().square().sum().backward()
    for got, want in zip(grads, (p.grad for p in model.parameters())):
        assert got.dtype == F32
        torch.testing.assert_close(got, want, rtol=0.0, atol=2.0**-7 * _scale(want))
