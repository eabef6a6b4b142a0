"""bf16-activation mode of the ops: float32 values, bfloat16 activations, float32 accumulation.

References are float64 products of the bf16 inputs and float32 values: bf16 results must lie within 2**-7 of
the output's scale and, for spmm / spmm_t, be each element rounded once (a kernel that rounds the values or
its partial sums to bf16 fails that); the float32 results of sddmm are held to float32 tolerance.
"""

import pytest
import torch

from sparselayer import ops
from sparselayer.csr import transpose_index

from conftest import DEVICES
from csr_cases import (CASE_IDS, CASES, assert_bf16_close, assert_rounded_once, dense_of, opcheck_every_op, random_csr,
                       tolerances)

BATCHES = [1, 4, 0]
BF16, F32 = torch.bfloat16, torch.float32


def _setup(case, device, batch, seed=0):
    """float32 CSR values, bfloat16 x (batch, n_in) and grad_y (batch, n_out), the float64 dense W."""
    n_out, n_in, nnz, n_empty = case
    crow, col, values = random_csr(n_out, n_in, nnz, n_empty, dtype=F32, device=device, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, n_in, generator=g).to(device=device, dtype=BF16)
    grad_y = torch.randn(batch, n_out, generator=g).to(device=device, dtype=BF16)
    w64 = dense_of(crow, col, values, (n_out, n_in)).double()
    return crow, col, values, x, grad_y, w64


def _sampled(crow, col, dense):
    """dense (n_out, n_in) at W's nonzeros, in CSR order."""
    rows = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=crow.device), crow.diff())
    return dense[rows, col]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_spmm_bf16_activations(device, case, batch):
    crow, col, values, x, _, w64 = _setup(case, device, batch)
    y = ops.spmm(crow, col, values, x, case[0])
    assert y.shape == (batch, case[0]) and y.is_contiguous()
    assert_bf16_close(y, x.double() @ w64.T)
    assert_rounded_once(y, x.double() @ w64.T, x.double().abs() @ w64.abs().T)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_spmm_t_bf16_activations(device, case, batch):
    crow, col, values, _, grad_y, w64 = _setup(case, device, batch)
    ccol, row, perm = transpose_index(crow, col, case[1])
    grad_x = ops.spmm_t(ccol, row, perm, values, grad_y, case[1])
    assert grad_x.shape == (batch, case[1]) and grad_x.is_contiguous()
    assert_bf16_close(grad_x, grad_y.double() @ w64)
    assert_rounded_once(grad_x, grad_y.double() @ w64, grad_y.double().abs() @ w64.abs())


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_sddmm_bf16_inputs_give_float32(device, case, batch):
    crow, col, _, x, grad_y, _ = _setup(case, device, batch)
    grad_values = ops.sddmm(crow, col, grad_y, x)
    assert grad_values.shape == (case[2],) and grad_values.dtype == F32
    expected = _sampled(crow, col, grad_y.double().T @ x.double())
    torch.testing.assert_close(grad_values, expected.float(), **tolerances(F32))


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_bf16_inputs(device):
    crow, col, values, _, _, w64 = _setup(CASES[0], device, 1)
    n_out, n_in = CASES[0][:2]
    x = torch.randn(n_in, 10, device=device).to(BF16).T  # (10, n_in), column-major
    grad_y = torch.randn(10, 2 * n_out, device=device).to(BF16)[:, ::2]  # strided columns
    assert not x.is_contiguous() and not grad_y.is_contiguous()
    assert_bf16_close(ops.spmm(crow, col, values, x, n_out), x.double() @ w64.T)
    ccol, row, perm = transpose_index(crow, col, n_in)
    assert_bf16_close(ops.spmm_t(ccol, row, perm, values, grad_y, n_in), grad_y.double() @ w64)
    expected = _sampled(crow, col, grad_y.double().T @ x.double()).float()
    torch.testing.assert_close(ops.sddmm(crow, col, grad_y, x), expected, **tolerances(F32))


# ----------------------------------------------------------------------------------------------------------
# Autograd: gradient dtypes (values float32, activations bfloat16) and values against float64 references.


def _grads(out, inputs, cotangent, create_graph=False):
    return torch.autograd.grad(out, inputs, cotangent, create_graph=create_graph)


@pytest.mark.parametrize("device", DEVICES)
def test_spmm_backward_in_mixed_mode(device):
    crow, col, values, x, g, w64 = _setup(CASES[0], device, 5)
    values.requires_grad_(), x.requires_grad_()
    y = ops.spmm(crow, col, values, x, CASES[0][0])
    grad_values, grad_x = _grads(y, (values, x), g)
    assert grad_values.dtype == F32
    torch.testing.assert_close(grad_values, _sampled(crow, col, g.double().T @ x.double()).float(), **tolerances(F32))
    assert_bf16_close(grad_x, g.double() @ w64)


@pytest.mark.parametrize("device", DEVICES)
def test_spmm_t_backward_in_mixed_mode(device):
    crow, col, values, x, grad_y, w64 = _setup(CASES[0], device, 5)
    n_out, n_in = CASES[0][:2]
    ccol, row, perm = transpose_index(crow, col, n_in)
    values.requires_grad_(), grad_y.requires_grad_()
    grad_x = ops.spmm_t(ccol, row, perm, values, grad_y, n_in)
    h = x  # a bf16 (batch, n_in) cotangent
    grad_values, grad_grad_y = _grads(grad_x, (values, grad_y), h)
    assert grad_values.dtype == F32
    expected = _sampled(crow, col, grad_y.double().T @ h.double()).float()
    torch.testing.assert_close(grad_values, expected, **tolerances(F32))
    assert_bf16_close(grad_grad_y, h.double() @ w64.T)


@pytest.mark.parametrize("device", DEVICES)
def test_sddmm_backward_in_mixed_mode(device):
    crow, col, values, x, grad_y, _ = _setup(CASES[0], device, 5)
    n_out, n_in = CASES[0][:2]
    grad_y.requires_grad_(), x.requires_grad_()
    grad_values = ops.sddmm(crow, col, grad_y, x)
    c = values  # a float32 (nnz,) cotangent, read as a CSR matrix C with W's pattern
    grad_grad_y, grad_x = _grads(grad_values, (grad_y, x), c)
    c64 = dense_of(crow, col, c, (n_out, n_in)).double()
    assert_bf16_close(grad_grad_y, x.double() @ c64.T)
    assert_bf16_close(grad_x, grad_y.double() @ c64)


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_in_mixed_mode(device):
    # d/dW <g @ W, h> = (g^T h) at W's nonzeros: runs spmm's backward with create_graph, then spmm_t's
    # backward, whose sddmm must return float32 for the float32 values.
    crow, col, values, x, g, _ = _setup(CASES[0], device, 5)
    values.requires_grad_(), x.requires_grad_()
    (grad_x,) = _grads(ops.spmm(crow, col, values, x, CASES[0][0]), (x,), g, create_graph=True)
    assert grad_x.dtype == BF16 and grad_x.requires_grad
    h = torch.randn_like(x)  # (batch, n_in) bf16
    (grad_values,) = _grads(grad_x, (values,), h)
    assert grad_values.dtype == F32
    torch.testing.assert_close(grad_values, _sampled(crow, col, g.double().T @ h.double()).float(), **tolerances(F32))


@pytest.mark.parametrize("device", DEVICES)
def test_linear_backward_in_mixed_mode(device):
    crow, col, values, x, g, w64 = _setup(CASES[0], device, 5)
    n_out, n_in = CASES[0][:2]
    ccol, row, perm = transpose_index(crow, col, n_in)
    bias = torch.randn(n_out, device=device, requires_grad=True)
    values.requires_grad_(), x.requires_grad_()
    y = ops.linear(crow, col, ccol, row, perm, values, x, n_out, bias)
    product, expected = x.double() @ w64.T, x.double() @ w64.T + bias.detach().double()
    # Two roundings (the product, then the bias add), each within half a bf16 ulp of its own magnitude.
    assert_bf16_close(y, expected, scale=max(product.abs().max().item(), expected.abs().max().item()))
    grad_values, grad_bias, grad_x = _grads(y, (values, bias, x), g)
    assert grad_values.dtype == grad_bias.dtype == F32
    torch.testing.assert_close(grad_bias, g.double().sum(0).float(), **tolerances(F32))
    torch.testing.assert_close(grad_values, _sampled(crow, col, g.double().T @ x.double()).float(), **tolerances(F32))
    assert_bf16_close(grad_x, g.double() @ w64)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_mixed_inputs(device):
    # opcheck runs the fake implementations against the kernels (output dtypes included) and the ops through
    # autograd and AOT dispatch; every one of its checks supports these dtypes, so none is left out.
    crow, col, values, x, grad_y, _ = _setup(CASES[0], device, 3)
    n_out, n_in = CASES[0][:2]
    ccol, row, perm = transpose_index(crow, col, n_in)
    values.requires_grad_(), x.requires_grad_(), grad_y.requires_grad_()
    opcheck_every_op(crow, col, ccol, row, perm, values, x, grad_y)


def test_fake_implementations_give_the_contract_dtypes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    crow, col, values, x, grad_y, _ = _setup(CASES[0], "cpu", 3)
    n_out, n_in = CASES[0][:2]
    ccol, row, perm = transpose_index(crow, col, n_in)
    with FakeTensorMode(allow_non_fake_inputs=True):
        assert torch.ops.sparselayer.spmm.default(crow, col, values, x, n_out).dtype == BF16
        assert torch.ops.sparselayer.spmm_t.default(ccol, row, perm, values, grad_y, n_in).dtype == BF16
        assert torch.ops.sparselayer.sddmm.default(crow, col, grad_y, x).dtype == F32
        assert torch.ops.sparselayer.sddmm.default(crow, col, grad_y.double(), x.double()).dtype == torch.float64


# ----------------------------------------------------------------------------------------------------------
# Rejected mixtures


def test_wrappers_reject_other_mixtures():
    crow, col, values, x, grad_y, _ = _setup(CASES[0], "cpu", 2)
    n_out, n_in = CASES[0][:2]
    ccol, row, perm = transpose_index(crow, col, n_in)
    with pytest.raises(TypeError, match=r"x is torch.float16 but the weight values are torch.float32.*"
                                        r"cast x to torch.float32 or torch.bfloat16"):
        ops.spmm(crow, col, values, x.half(), n_out)
    with pytest.raises(TypeError, match=r"x is torch.bfloat16 but the weight values are torch.float64.*"
                                        r"use bfloat16 activations with float32 values"):
        ops.spmm(crow, col, values.double(), x, n_out)
    with pytest.raises(TypeError, match=r"the weight values are torch.bfloat16; allowed: float32 or float64 values"):
        ops.spmm(crow, col, values.bfloat16(), x, n_out)
    with pytest.raises(TypeError, match=r"the weight values are torch.float16"):
        ops.spmm(crow, col, values.half(), x.half(), n_out)
    with pytest.raises(TypeError, match=r"grad_y is torch.float16 but the weight values are torch.float32"):
        ops.spmm_t(ccol, row, perm, values, grad_y.half(), n_in)
    with pytest.raises(TypeError, match=r"grad_y is torch.bfloat16 but x is torch.float32.*cast grad_y to torch.float32"):
        ops.sddmm(crow, col, grad_y, x.float())
    with pytest.raises(TypeError, match=r"grad_y and x are torch.float16; allowed: float32, float64, or bfloat16"):
        ops.sddmm(crow, col, grad_y.half(), x.half())
    with pytest.raises(TypeError, match=r"x is torch.float16 but the weight values are torch.float32"):
        ops.linear(crow, col, ccol, row, perm, values, x.half(), n_out)
    with pytest.raises(ValueError, match=r"bias must be \(7,\) torch.float32"):  # the bias is never bf16
        ops.linear(crow, col, ccol, row, perm, values, x, n_out, bias=torch.zeros(n_out, dtype=BF16))
