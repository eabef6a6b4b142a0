"""The op contract's layouts (sparselayer/_library.py, Layouts): spmm's and spmm_t's results take their dense
operand's layout, gradients follow the activations' layout through `linear`, and SparseMLP keeps its activations
feature-major between layers while taking and returning row-major tensors. On every device of DEVICES."""

import pytest
import torch

import sparselayer
from sparselayer import ops
from sparselayer.csr import transpose_index

from conftest import DEVICES
from csr_cases import assert_compiled_matches_eager, assert_layout, dense_of, opcheck_every_op, random_csr

BF16 = torch.bfloat16
# (activation dtype, values dtype): the two fp precisions and the bf16-activation mode
PRECISIONS = [(torch.float32, torch.float32), (torch.float64, torch.float64), (BF16, torch.float32)]
PRECISION_IDS = ["fp32", "fp64", "bf16-activations"]
# (n_out, n_in, nnz, batch): odd sizes, a single row or column on either side (both layouts coincide there)
SHAPES = [(7, 96, 333, 5), (33, 17, 200, 64), (12, 40, 90, 1), (9, 1, 5, 8), (1, 30, 20, 6)]
SHAPE_IDS = [f"{o}x{i}-nnz{n}-b{b}" for o, i, n, b in SHAPES]


def _activation(batch, n, dtype, layout, device, g):
    t = torch.randn(batch, n, generator=g, dtype=torch.float64)
    if layout == "feature-major":
        t = t.t().contiguous().t()
        assert batch == 1 or n == 1 or t.stride() == (1, batch)
    return t.to(device=device, dtype=dtype)  # .to keeps the strides


def _tolerance(dtype):
    return {torch.float32: 1e-5, torch.float64: 1e-12, BF16: 2.0**-7}[dtype]


@pytest.mark.parametrize("layout", ["row-major", "feature-major"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("precision", PRECISIONS, ids=PRECISION_IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_products_return_their_operands_layout(device, precision, shape, layout):
    act, val = precision
    n_out, n_in, nnz, batch = shape
    crow, col, values = random_csr(n_out, n_in, nnz, dtype=val, device=device, seed=3)
    g = torch.Generator().manual_seed(4)
    x = _activation(batch, n_in, act, layout, device, g)
    grad_y = _activation(batch, n_out, act, layout, device, g)
    w = dense_of(crow, col, values, (n_out, n_in)).double().cpu()

    y = ops.spmm(crow, col, values, x, n_out)
    assert_layout(y, x)
    ccol, row, perm = transpose_index(crow, col, n_in)
    gx = ops.spmm_t(ccol, row, perm, values, grad_y, n_in)
    assert_layout(gx, grad_y)
    for out, ref in ((y, x.double().cpu() @ w.T), (gx, grad_y.double().cpu() @ w)):
        assert out.dtype == act
        err = (out.double().cpu() - ref).abs().max().item()
        assert err <= _tolerance(act) * max(ref.abs().max().item(), 1.0), f"max error {err:.3g}"


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_with_feature_major_operands(device):
    """opcheck compares the fake implementations' strides with the kernels' results."""
    crow, col, values = random_csr(7, 96, 333, 2, dtype=torch.float64, device=device, seed=5)
    ccol, row, perm = transpose_index(crow, col, 96)
    g = torch.Generator().manual_seed(6)
    x = _activation(10, 96, torch.float64, "feature-major", device, g).requires_grad_()
    grad_y = _activation(10, 7, torch.float64, "feature-major", device, g).requires_grad_()
    opcheck_every_op(crow, col, ccol, row, perm, values.requires_grad_(), x, grad_y)


@pytest.mark.parametrize("device", DEVICES)
def test_linear_backward_returns_grad_x_in_the_layout_of_x(device):
    """A row-major gradient reaching a layer whose input is feature-major comes back feature-major, with the same
    values as the all-row-major computation."""
    layer = sparselayer.SparseLinear(40, 24, 0.8, device=device, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(8)
    x_rm = _activation(16, 40, torch.float32, "row-major", device, g)
    grad = _activation(16, 24, torch.float32, "row-major", device, g)
    results = {}
    for layout, x in (("row-major", x_rm), ("feature-major", x_rm.t().contiguous().t())):
        x = x.clone().requires_grad_()
        layer.zero_grad()
        y = layer(x)
        y.backward(grad)
        results[layout] = (y.detach(), x.grad, layer.values.grad.clone(), layer.bias.grad.clone())
        if layout == "feature-major":
            assert y.stride() == (1, 16) and x.grad.stride() == (1, 16)
        else:
            assert y.is_contiguous() and x.grad.is_contiguous()
    for a, b in zip(results["row-major"], results["feature-major"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _capture_layers(model):
    """Hooks recording each SparseLinear's input and output, and the gradient of its output, by layer."""
    seen = []

    def hook(module, inputs, output):
        i = model.sparse_layers().index(module)
        seen.append((f"layer {i} input", inputs[0]))
        seen.append((f"layer {i} output", output))
        output.register_hook(lambda grad: seen.append((f"layer {i} output's gradient", grad)))

    for layer in model.sparse_layers():
        layer.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("device", DEVICES)
def test_mlp_keeps_activations_feature_major_between_layers(device):
    gen = torch.Generator().manual_seed(9)
    model = sparselayer.SparseMLP([30, 64, 48, 5], sparsity=0.8, device=device, generator=gen)
    x = torch.randn(32, 30, generator=torch.Generator().manual_seed(10)).to(device)
    seen = _capture_layers(model)
    out = model(x)
    assert out.is_contiguous(), "the network's result is row-major whatever it keeps inside"
    out.square().sum().backward()
    assert len(seen) == 9
    # All but the last layer's output gradient, which the loss hands over row-major (its layer's backward copies it).
    last = "layer 2 output's gradient"
    assert dict(seen)[last].is_contiguous()
    for what, t in seen:
        assert what == last or t.stride() == (1, 32), f"{what} has strides {t.stride()}"
    # The same network applied layer by layer on row-major activations: the same result and gradients.
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    h = x
    for i, layer in enumerate(model.layers):
        h = layer(h.contiguous())
        h = model.output_activation(h) if i == len(model.layers) - 1 else model.hidden_activation(h)
    torch.testing.assert_close(out, h, rtol=1e-5, atol=1e-6)
    h.square().sum().backward()
    for got, want in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_of_a_mlp_with_feature_major_activations(device):
    model = sparselayer.SparseMLP([20, 16, 12, 3], sparsity=0.7, device=device,
                                  generator=torch.Generator().manual_seed(11))
    x = torch.randn(8, 20, generator=torch.Generator().manual_seed(12)).to(device)
    assert assert_compiled_matches_eager(model, x).is_contiguous()
