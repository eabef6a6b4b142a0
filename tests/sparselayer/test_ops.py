"""The sparse products against dense float64 references, gradcheck, opcheck and error handling."""

import sys

import pytest
import torch

import sparselayer
from sparselayer import ops
from sparselayer.csr import transpose_index

from conftest import DEVICES, DTYPES
from csr_cases import CASE_IDS, CASES, dense_of, opcheck_every_op, random_csr, tolerances

BATCHES = [1, 4, 0]


def _setup(case, device, dtype, batch, seed=0):
    n_out, n_in, nnz, n_empty = case
    crow, col, values = random_csr(n_out, n_in, nnz, n_empty, dtype=dtype, device=device, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, n_in, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    grad_y = torch.randn(batch, n_out, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    w64 = dense_of(crow, col, values, (n_out, n_in)).double()
    return crow, col, values, x, grad_y, w64


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_spmm_matches_dense(device, dtype, case, batch):
    crow, col, values, x, _, w64 = _setup(case, device, dtype, batch)
    y = ops.spmm(crow, col, values, x, case[0])
    assert y.shape == (batch, case[0]) and y.dtype == dtype and y.is_contiguous()
    torch.testing.assert_close(y, (x.double() @ w64.T).to(dtype), **tolerances(dtype))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_spmm_t_matches_dense(device, dtype, case, batch):
    crow, col, values, _, grad_y, w64 = _setup(case, device, dtype, batch)
    ccol, row, perm = transpose_index(crow, col, case[1])
    grad_x = ops.spmm_t(ccol, row, perm, values, grad_y, case[1])
    assert grad_x.shape == (batch, case[1]) and grad_x.dtype == dtype and grad_x.is_contiguous()
    torch.testing.assert_close(grad_x, (grad_y.double() @ w64).to(dtype), **tolerances(dtype))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_sddmm_matches_dense(device, dtype, case, batch):
    crow, col, values, x, grad_y, _ = _setup(case, device, dtype, batch)
    grad_values = ops.sddmm(crow, col, grad_y, x)
    rows = torch.repeat_interleave(torch.arange(case[0], device=device), crow.diff())
    expected = (grad_y.double().T @ x.double())[rows, col]
    assert grad_values.shape == (case[2],) and grad_values.dtype == dtype
    torch.testing.assert_close(grad_values, expected.to(dtype), **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device, dtype):
    crow, col, values, _, _, w64 = _setup(CASES[0], device, dtype, 1)
    n_out, n_in = CASES[0][:2]
    x = torch.randn(n_in, 10, dtype=dtype, device=device).T  # (10, n_in), column-major
    grad_y = torch.randn(10, 2 * n_out, dtype=dtype, device=device)[:, ::2]  # strided columns
    assert not x.is_contiguous() and not grad_y.is_contiguous()
    tol = tolerances(dtype)
    torch.testing.assert_close(ops.spmm(crow, col, values, x, n_out), (x.double() @ w64.T).to(dtype), **tol)
    ccol, row, perm = transpose_index(crow, col, n_in)
    torch.testing.assert_close(
        ops.spmm_t(ccol, row, perm, values, grad_y, n_in), (grad_y.double() @ w64).to(dtype), **tol
    )
    rows = torch.repeat_interleave(torch.arange(n_out, device=device), crow.diff())
    expected = (grad_y.double().T @ x.double())[rows, col].to(dtype)
    torch.testing.assert_close(ops.sddmm(crow, col, grad_y, x), expected, **tol)


def _grad_inputs(case, seed=0):
    crow, col, values, x, grad_y, _ = _setup(case, "cpu", torch.float64, 3, seed)
    ccol, row, perm = transpose_index(crow, col, case[1])
    return crow, col, ccol, row, perm, values.requires_grad_(), x.requires_grad_(), grad_y.requires_grad_()


GRADCHECK_CASES = [(5, 9, 20, 1), (1, 1, 1, 0), CASES[0]]  # the last one (333 nonzeros) in fast mode


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=["5x9-nnz20-empty1", "1x1-nnz1", CASE_IDS[0] + "-fast"])
def test_gradcheck(case):
    crow, col, ccol, row, perm, values, x, grad_y = _grad_inputs(case)
    n_out, n_in = case[:2]
    bias = torch.randn(n_out, dtype=torch.float64, requires_grad=True)
    checks = [
        (lambda v, a: ops.spmm(crow, col, v, a, n_out), (values, x)),
        (lambda v, g: ops.spmm_t(ccol, row, perm, v, g, n_in), (values, grad_y)),
        (lambda g, a: ops.sddmm(crow, col, g, a), (grad_y, x)),
        (lambda v, b, a: ops.linear(crow, col, ccol, row, perm, v, a, n_out, b), (values, bias, x)),
    ]
    fast = case[2] > 100  # full Jacobians of hundreds of inputs are slow; fast mode checks random projections
    for fn, inputs in checks:
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def test_opcheck_every_op():
    crow, col, ccol, row, perm, values, x, grad_y = _grad_inputs(CASES[0])
    n_out, n_in = CASES[0][:2]
    opcheck_every_op(crow, col, ccol, row, perm, values, x, grad_y)


def test_wrappers_reject_bad_input():
    crow, col, values, x, grad_y, _ = _setup(CASES[0], "cpu", torch.float32, 2)
    n_out, n_in = CASES[0][:2]
    with pytest.raises(TypeError, match="float64 but the weight values are torch.float32"):
        ops.spmm(crow, col, values, x.double(), n_out)
    with pytest.raises(ValueError, match="must be 2-D"):
        ops.spmm(crow, col, values, x[0], n_out)
    with pytest.raises(ValueError, match="n_out = 8 needs 9"):
        ops.spmm(crow, col, values, x, n_out + 1)
    with pytest.raises(TypeError, match="int64"):
        ops.spmm(crow.int(), col.int(), values, x, n_out)
    with pytest.raises(ValueError, match="values has shape"):
        ops.spmm(crow, col, values[:-1], x, n_out)
    with pytest.raises(ValueError, match="batch"):
        ops.sddmm(crow, col, grad_y, x[:1])
    ccol, row, perm = transpose_index(crow, col, n_in)
    with pytest.raises(ValueError, match="columns but the weight has 96 inputs"):
        ops.linear(crow, col, ccol, row, perm, values, x[:, :-1], n_out)
    with pytest.raises(ValueError, match=r"bias must be \(7,\) torch.float32"):
        ops.linear(crow, col, ccol, row, perm, values, x, n_out, bias=values[:7].double())


def test_package_exports():
    for name in sparselayer.__all__:
        assert hasattr(sparselayer, name), name


class _AutogradKernelCalls:
    """Counts entries into the Python autograd kernel that torch.library.register_autograd installs, on this thread
    (a CPU backward runs on it; a CUDA backward on the autograd engine's own thread, not counted here)."""

    def __init__(self):
        self.calls = 0

    def __enter__(self):
        def hook(frame, event, arg):
            code = frame.f_code
            if event == "call" and code.co_name == "autograd_impl" and "_library" in code.co_filename:
                self.calls += 1

        self._previous = sys.getprofile()
        sys.setprofile(hook)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._previous)


@pytest.mark.parametrize("device", DEVICES)
def test_calls_without_a_graph_skip_the_python_autograd_kernel(device):
    # ops._call: with nothing to record, the ops go straight to the device kernel (host time per call); where a graph
    # is recorded (an input requires grad, create_graph), they keep their registered autograd.
    crow, col, values, x, grad_y, _ = _setup(CASES[0], device, torch.float32, 4)
    n_out, n_in = CASES[0][:2]
    ccol, row, perm = transpose_index(crow, col, n_in)
    with _AutogradKernelCalls() as seen:
        y = ops.spmm(crow, col, values, x, n_out)
        ops.spmm_t(ccol, row, perm, values, grad_y, n_in)
        ops.sddmm(crow, col, grad_y, x)
    assert seen.calls == 0 and y.grad_fn is None

    vp, xp = values.clone().requires_grad_(), x.clone().requires_grad_()
    with _AutogradKernelCalls() as seen:
        y = ops.linear(crow, col, ccol, row, perm, vp, xp, n_out)  # its own autograd.Function: ops called below
        y.backward(grad_y)
    assert seen.calls == 0 and y.grad_fn is not None
    torch.testing.assert_close(vp.grad, ops.sddmm(crow, col, grad_y, x))
    torch.testing.assert_close(xp.grad, ops.spmm_t(ccol, row, perm, values, grad_y, n_in))

    with _AutogradKernelCalls() as seen:
        y = ops.spmm(crow, col, vp, x, n_out)  # a graph to record: through the registered autograd
    assert seen.calls == 1 and y.grad_fn is not None
    # double backward: linear's backward (on the autograd engine's thread for CUDA) records its products
    y = ops.linear(crow, col, ccol, row, perm, vp, xp, n_out)
    (gx,) = torch.autograd.grad(y, xp, grad_y, create_graph=True)
    assert gx.requires_grad and "spmm_t" in type(gx.grad_fn).__name__
