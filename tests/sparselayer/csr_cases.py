"""Random CSR matrices for the sparselayer tests (sputnik-style odd shapes, empty rows, float64 references).

Dense tensors appear here only as test references.
"""

from __future__ import annotations

import torch

# (n_out, n_in, nnz, n_empty_rows): odd shapes, empty rows, a single element, an empty matrix.
CASES = [
    (7, 96, 333, 2),
    (33, 17, 200, 5),
    (1, 1, 1, 0),
    (5, 3, 0, 5),
    (64, 31, 64, 0),
]
CASE_IDS = [f"{o}x{i}-nnz{n}-empty{e}" for o, i, n, e in CASES]


def random_csr(n_out, n_in, nnz, n_empty_rows=0, *, dtype=torch.float64, device="cpu", seed=0):
    """(crow, col, values) of a random (n_out, n_in) CSR matrix whose first `n_empty_rows` rows, shuffled,
    hold no nonzero."""
    g = torch.Generator().manual_seed(seed)
    empty = torch.randperm(n_out, generator=g)[:n_empty_rows]
    allowed = torch.ones(n_out, n_in, dtype=torch.bool)
    allowed[empty] = False
    positions = allowed.reshape(-1).nonzero().squeeze(1)
    assert nnz <= positions.numel(), "case asks for more nonzeros than fit"
    keys = positions[torch.randperm(positions.numel(), generator=g)[:nnz]].sort().values
    rows, col = keys // n_in, keys % n_in
    crow = torch.zeros(n_out + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(rows, minlength=n_out).cumsum(0)
    values = torch.randn(nnz, generator=g, dtype=torch.float64)
    return crow.to(device), col.to(device), values.to(device=device, dtype=dtype)


def dense_of(crow, col, values, shape):
    """The dense reference of a CSR matrix."""
    rows = torch.repeat_interleave(torch.arange(shape[0], device=crow.device), crow.diff())
    dense = values.new_zeros(shape)
    dense[rows, col] = values
    return dense


def tolerances(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}


BF16_RTOL = 2.0**-7  # twice bfloat16's unit roundoff (8 significant bits): one rounding of an exact result


def assert_bf16_close(actual, reference, scale=None, rtol=BF16_RTOL):
    """actual is bfloat16 and within rtol * scale of the float64 reference (scale: its largest magnitude)."""
    assert actual.dtype == torch.bfloat16, actual.dtype
    actual, reference = actual.detach().double(), reference.detach().double()
    if scale is None:
        scale = reference.abs().max().item() if reference.numel() else 0.0
    torch.testing.assert_close(actual, reference, rtol=0.0, atol=rtol * float(scale))


def assert_rounded_once(actual, reference, magnitude):
    """Each element of the bfloat16 `actual` is the float64 reference rounded once to bfloat16 (within half an
    ulp, 2**-8 relative), up to float32 accumulation error (2**-16 of `magnitude`, the reference computed on
    absolute values). Rounding the values or partial sums to bf16 on the way breaks this where terms cancel."""
    assert actual.dtype == torch.bfloat16, actual.dtype
    actual, reference, magnitude = (t.detach().double() for t in (actual, reference, magnitude))
    bound = 2.0**-8 * reference.abs() + 2.0**-16 * magnitude
    excess = (actual - reference).abs() - bound
    assert not (excess > 0).any(), f"{int((excess > 0).sum())} elements off by more than one bf16 rounding"


def opcheck_every_op(crow, col, ccol, row, perm, values, x, grad_y):
    """torch.library.opcheck (schema, fake, autograd registration, AOT dispatch) of the three ops on these inputs."""
    n_out, n_in = grad_y.shape[1], x.shape[1]
    calls = [
        (torch.ops.sparselayer.spmm.default, (crow, col, values, x, n_out)),
        (torch.ops.sparselayer.spmm_t.default, (ccol, row, perm, values, grad_y, n_in)),
        (torch.ops.sparselayer.sddmm.default, (crow, col, grad_y, x)),
    ]
    for op, args in calls:
        results = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in results.values()), (op, results)


def assert_layout(out, operand):
    """spmm's and spmm_t's result takes its dense operand's layout (sparselayer/_library.py, Layouts): feature-major
    (strides (1, batch)) for a feature-major operand with more than one row and column, row-major otherwise."""
    batch, n = out.shape
    if operand.stride(0) == 1 and batch > 1 and operand.shape[1] > 1 and n > 1:
        assert out.stride() == (1, batch), f"feature-major operand, result strides {out.stride()}"
    else:
        assert out.is_contiguous(), f"row-major operand {operand.stride()}, result strides {out.stride()}"


def assert_compiled_matches_eager(model, x):
    """torch.compile(model, fullgraph=True) gives the eager result and, through a square loss, the same gradients."""
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    expected = model(x)
    y = compiled(x)
    torch.testing.assert_close(y, expected)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected.square().sum().backward()
    for got, want in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want)
    return y
