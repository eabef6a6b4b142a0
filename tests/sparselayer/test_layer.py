"""SparseLinear against nn.Linear with the same masked weight, construction, state_dict, devices, compile."""

import io

import pytest
import torch
from torch import nn

from sparselayer import CSRError, SparseLinear
from sparselayer.csr import validate_csr

from conftest import DEVICES, DTYPES
from csr_cases import CASE_IDS, CASES, assert_compiled_matches_eager, random_csr, tolerances


def _pair(case, device, dtype, bias=True, seed=0):
    """A SparseLinear from a random CSR and the nn.Linear holding the same (masked) dense weight."""
    n_out, n_in, nnz, n_empty = case
    crow, col, values = random_csr(n_out, n_in, nnz, n_empty, dtype=dtype, device=device, seed=seed)
    b = torch.randn(n_out, dtype=dtype, device=device) if bias else None
    sparse = SparseLinear.from_csr(crow, col, values, (n_out, n_in), bias=b)
    dense = nn.Linear(n_in, n_out, bias=bias, device=device, dtype=dtype)
    with torch.no_grad():
        dense.weight.copy_(sparse.to_dense())
        if bias:
            dense.bias.copy_(b)
    return sparse, dense


@pytest.mark.parametrize("lead", [(1,), (5,), (2, 3)], ids=["batch1", "batch5", "3d"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_forward_and_gradients_match_nn_linear(device, dtype, case, lead):
    sparse, dense = _pair(case, device, dtype)
    x = torch.randn(*lead, case[1], dtype=dtype, device=device)
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yd = sparse(xs), dense(xd)
    tol = tolerances(dtype)
    torch.testing.assert_close(ys, yd, **tol)
    g = torch.randn_like(yd)
    ys.backward(g)
    yd.backward(g)
    torch.testing.assert_close(xs.grad, xd.grad, **tol)
    rows = torch.repeat_interleave(torch.arange(case[0], device=device), sparse.crow_indices.diff())
    torch.testing.assert_close(sparse.values.grad, dense.weight.grad[rows, sparse.col_indices], **tol)
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad, **tol)


def test_gradcheck_through_the_layer():
    sparse, _ = _pair((6, 11, 25, 1), "cpu", torch.float64)
    x = torch.randn(2, 3, 11, dtype=torch.float64, requires_grad=True)
    params = (sparse.values, sparse.bias)

    def fn(x, values, bias):
        return torch.func.functional_call(sparse, {"values": values, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(fn, (x, *params))


def test_no_bias_and_repr():
    layer = SparseLinear(96, 7, 0.9, bias=False)
    assert layer.bias is None
    assert [n for n, _ in layer.named_parameters()] == ["values"]
    assert layer.nnz == 7 * 10 and layer.values.shape == (70,)
    assert repr(layer) == "SparseLinear(in_features=96, out_features=7, sparsity=0.8958, nnz=70, bias=False)"


def test_bad_input_shape_is_rejected():
    layer = SparseLinear(10, 4, 0.5)
    with pytest.raises(ValueError, match=r"expects inputs \(\.\.\., 10\), got shape \(3, 9\)"):
        layer(torch.randn(3, 9))
    with pytest.raises(TypeError, match="float64 but the weight values are torch.float32"):
        layer(torch.randn(3, 10, dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_from_dense_to_dense_round_trip(device, dtype):
    w = torch.randn(9, 13, dtype=dtype, device=device) * (torch.rand(9, 13, device=device) < 0.3)
    w[4] = 0  # an empty row
    b = torch.randn(9, dtype=dtype, device=device)
    layer = SparseLinear.from_dense(w, b)
    assert layer.nnz == int((w != 0).sum()) and layer.values.dtype == dtype
    assert torch.equal(layer.to_dense(), w) and torch.equal(layer.bias.detach(), b)
    x = torch.randn(4, 13, dtype=dtype, device=device)
    torch.testing.assert_close(layer(x), x @ w.T + b, **tolerances(dtype))


def test_from_csr_rejects_bad_csr():
    crow, col, values = torch.tensor([0, 2, 3]), torch.tensor([1, 0, 2]), torch.ones(3)
    with pytest.raises(CSRError, match="row 0 has unsorted columns 1, 0"):
        SparseLinear.from_csr(crow, col, values, (2, 3))
    with pytest.raises(CSRError, match=r"col_indices\[2\] = 5, must be in \[0, 3\)"):
        SparseLinear.from_csr(crow, torch.tensor([0, 1, 5]), values, (2, 3))
    with pytest.raises(CSRError, match="needs n_out \\+ 1 = 4"):
        SparseLinear.from_csr(crow, torch.tensor([0, 1, 2]), values, (3, 3))
    with pytest.raises(ValueError, match=r"bias must be a tensor of shape \(2,\)"):
        SparseLinear.from_csr(crow, torch.tensor([0, 1, 2]), values, (2, 3), bias=torch.ones(3))
    with pytest.raises(ValueError, match="shape must be"):
        SparseLinear.from_csr(crow, torch.tensor([0, 1, 2]), values, 3)
    with pytest.raises(ValueError, match="2-D"):
        SparseLinear.from_dense(torch.ones(3))


def test_set_topology_validates_and_keeps_the_parameter():
    layer = SparseLinear(6, 4, 0.5)
    param = layer.values
    crow, col, values = random_csr(4, 6, 10, 1, dtype=torch.float32)
    layer.set_topology(crow, col, values)
    assert layer.values is param and layer.nnz == 10
    validate_csr(layer.csc_col_ptr, layer.csc_row, (6, 4), layer.values[layer.csc_perm])
    with pytest.raises(CSRError, match="unsorted"):
        layer.set_topology(crow, col.flip(0), values)


def test_state_dict_round_trip_into_a_different_topology():
    source = SparseLinear(30, 20, 0.8, generator=torch.Generator().manual_seed(0))
    crow, col, values = random_csr(20, 30, 77, 3, dtype=torch.float32)
    source.set_topology(crow, col, values)  # an "evolved" layer with another nnz
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert set(state) == {"values", "bias", "crow_indices", "col_indices"}  # the CSC index is derived
    target = SparseLinear(30, 20, 0.5, generator=torch.Generator().manual_seed(1))
    param = target.values
    target.load_state_dict(state)
    assert target.values is param and target.nnz == 77
    assert torch.equal(target.to_dense(), source.to_dense())
    x = torch.randn(3, 30)
    torch.testing.assert_close(target(x), source(x))


def test_load_state_dict_rejects_a_corrupt_csr():
    layer = SparseLinear(5, 4, 0.5)
    state = layer.state_dict()
    state["col_indices"] = state["col_indices"].flip(0)
    with pytest.raises(RuntimeError, match="saved CSR weight .* is invalid: .*sorted and unique"):
        layer.load_state_dict(state)


def test_to_moves_every_buffer():
    layer = SparseLinear(12, 5, 0.5).to(torch.float64)
    assert layer.values.dtype == torch.float64 and layer.crow_indices.dtype == torch.int64
    layer(torch.randn(2, 12, dtype=torch.float64))


@pytest.mark.gpu
def test_to_cuda_and_back():
    layer = SparseLinear(12, 5, 0.5).to("cuda")
    tensors = [layer.values, layer.bias, layer.crow_indices, layer.col_indices, layer.csc_col_ptr, layer.csc_row, layer.csc_perm]
    assert all(t.is_cuda for t in tensors)
    x = torch.randn(2, 12)
    torch.testing.assert_close(layer(x.cuda()).cpu(), layer.cpu()(x))


def test_optimizer_state_covers_only_the_nonzeros():
    layer = SparseLinear(100, 50, 0.95)
    opt = torch.optim.Adam(layer.parameters())
    layer(torch.randn(4, 100)).square().sum().backward()
    opt.step()
    assert opt.state[layer.values]["exp_avg"].shape == (layer.nnz,) == (250,)


def test_a_huge_layer_never_goes_dense():
    # A dense 200k x 200k float32 weight would need 160 GB; the sparse layer needs a few MB.
    layer = SparseLinear(200_000, 200_000, 0.99998, generator=torch.Generator().manual_seed(0))
    assert layer.nnz == 200_000 * 4
    x = torch.randn(2, 200_000, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.shape == x.shape and layer.values.grad.shape == (layer.nnz,)


def test_torch_compile_of_a_model_using_the_layer():
    model = nn.Sequential(SparseLinear(20, 16, 0.7), nn.ReLU(), SparseLinear(16, 3, 0.5))
    assert_compiled_matches_eager(model, torch.randn(8, 20))
