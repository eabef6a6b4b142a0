"""The CUDA kernels in the bf16-activation mode: float32 values, bfloat16 activations (x, grad_y and the products'
outputs), fp32 accumulation. Against float64 references computed from the same bf16-rounded inputs, on the
shapes and memory layouts of test_cuda_kernels.py (every kernel path: vector and scalar tile loads, several
panels, batch tails, empty rows), with poisoned outputs and fresh random inputs (the seed is in every message).

Skipped without a GPU (tests/conftest.py skips @pytest.mark.gpu).
"""

import pytest
import torch

from sparselayer import _cuda
from sparselayer.csr import transpose_index

from csr_cases import assert_layout, dense_of
from test_cuda_kernels import (KERNEL_VARIANTS, LAYOUTS, SHAPE_IDS, SHAPES, _case, _check, _dense, _force, _poison,
                               _seed, assert_deterministic)

pytestmark = pytest.mark.gpu
BF16 = torch.bfloat16


@pytest.fixture(autouse=True, scope="module")
def _kernels_loaded():
    _cuda.ensure_loaded()


def _bf16_case(shape, layout, seed):
    """fp32 values on the GPU, bf16 activations in the given layout, and the fp32 weight as float64."""
    n_out, n_in, _, _, batch = shape
    m, _, _, _ = _case(shape, torch.float32, "contiguous", seed)
    g = torch.Generator().manual_seed(seed + 2)
    x = _dense(batch, n_in, BF16, layout, g)
    grad_y = _dense(batch, n_out, BF16, layout, g)
    w = dense_of(m["crow"].cpu(), m["col"].cpu(), m["values"].double().cpu(), (n_out, n_in))
    return m, x, grad_y, w


def _check_bf16(out, ref, seed, what):
    """out: bf16 result of fp32 sums rounded once; ref: float64 from the same bf16 inputs."""
    assert out.dtype == BF16, f"{what}: dtype {out.dtype}"
    assert not out.isnan().any(), f"{what}: unwritten (NaN) elements, seed {seed}"
    ref = ref.to(out.device)
    scale = ref.abs().max().item() if ref.numel() else 0.0
    err = (out.double() - ref).abs()
    # Rounding to bf16 costs half an ulp, 2^-9 relative; 2^-8 leaves room for the fp32 sum's own error.
    bound = 2.0**-8 * ref.abs() + 2e-5 * max(scale, 1.0)
    bad = err > bound
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements off, worst {err.max().item():.3g} "
                           f"(scale {scale:.3g}), seed {seed}")


def _all_three(shape, layout, what):
    seed = _seed()
    n_out, n_in, nnz, _, batch = shape
    m, x, grad_y, w = _bf16_case(shape, layout, seed)
    _poison(batch * n_out, BF16)
    y = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x, n_out)
    assert y.shape == (batch, n_out)
    assert_layout(y, x)
    _check_bf16(y, x.double().cpu() @ w.T, seed, f"spmm {what}")
    ccol, row, perm = transpose_index(m["crow"], m["col"], n_in)
    _poison(batch * n_in, BF16)
    gx = torch.ops.sparselayer.spmm_t(ccol, row, perm, m["values"], grad_y, n_in)
    assert gx.shape == (batch, n_in)
    assert_layout(gx, grad_y)
    _check_bf16(gx, grad_y.double().cpu() @ w, seed, f"spmm_t {what}")
    rows = torch.repeat_interleave(torch.arange(n_out), m["crow"].cpu().diff())
    ref = (grad_y.double().cpu().T @ x.double().cpu())[rows, m["col"].cpu()]
    _poison(nnz, torch.float32)
    gv = torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x)
    assert gv.shape == (nnz,) and gv.dtype == torch.float32, "bf16 activations give float32 value gradients"
    _check(gv, ref, torch.float32, seed, f"sddmm {what}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_bf16_activations(shape, layout):
    _all_three(shape, layout, layout)


@pytest.mark.parametrize("variant", list(KERNEL_VARIANTS))
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_bf16_kernel_variants(shape, layout, variant, monkeypatch):
    """bf16 runs the single-buffered kernel whatever is forced (the double-buffered one is fp32 only); transposed
    operands take feature-major results, which every kernel writes itself."""
    _force(monkeypatch, variant)
    _all_three(shape, layout, f"{variant} {layout}")


@pytest.mark.parametrize("fm", ["1", "2"], ids=["feature-major-staging", "row-major-staging"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_bf16_sddmm_staging(shape, fm, monkeypatch):
    monkeypatch.setenv("SPARSELAYER_SDDMM_FM", fm)
    _all_three(shape, "transposed", f"sddmm staging {fm}")


# The row-sorted product's two ways with bf16 x: bf16 tiles of 64 batch values (spmm_sorted_bf16.cu, the default) and
# x widened to the fp32 kernel's tiles of 32; block shapes as in test_cuda_kernels.py (small blocks: several output
# passes and panels; 512 rows: the bf16 kernel's largest).
SORTED_BF16 = {
    "bf16-tiles": {"SPARSELAYER_SPMM_SORTED": "1"},
    "bf16-tiles-small-blocks": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SORTED_R": "96",
                                "SPARSELAYER_SORTED_P": "32"},
    "bf16-tiles-512-rows": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SORTED_R": "512"},
    "fp32-tiles": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SORTED_BF16": "2"},
    # both thread counts on every shape (the default takes 640 below 5% density)
    "bf16-tiles-512-threads": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SORTED_BF16_T": "512"},
    "bf16-tiles-small-blocks-640-threads": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SORTED_R": "96",
                                            "SPARSELAYER_SORTED_P": "32", "SPARSELAYER_SORTED_BF16_T": "640"},
}
# Beyond SHAPES: 4 row blocks of 512, 9 panels of 352, two full batch tiles of 64 and a tail of 2.
SORTED_SHAPES = SHAPES + [(2000, 3000, 60000, 7, 130)]
SORTED_IDS = SHAPE_IDS + ["2000x3000-nnz60000-empty7-b130"]


@pytest.mark.parametrize("variant", list(SORTED_BF16))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SORTED_SHAPES, ids=SORTED_IDS)
def test_bf16_row_sorted_kernels(shape, layout, variant, monkeypatch):
    for name, value in SORTED_BF16[variant].items():
        monkeypatch.setenv(name, value)
    _all_three(shape, layout, f"{variant} {layout}")


@pytest.mark.parametrize("variant", ["bf16-tiles", "bf16-tiles-small-blocks", "bf16-tiles-512-threads",
                                     "bf16-tiles-small-blocks-640-threads"])
@pytest.mark.parametrize("shape", SORTED_SHAPES[-3:], ids=SORTED_IDS[-3:])
def test_bf16_tiles_sum_what_the_fp32_kernel_sums(shape, variant, monkeypatch):
    """The bf16-tile kernel widens each bf16 exactly and adds in the fp32 kernel's order: its output is the fp32
    row-sorted product of x.float(), rounded once, bit for bit (forward and transposed product)."""
    for name, value in SORTED_BF16[variant].items():
        monkeypatch.setenv(name, value)
    seed = _seed()
    n_out, n_in = shape[0], shape[1]
    m, x, grad_y, _ = _bf16_case(shape, "contiguous", seed)
    ccol, row, perm = transpose_index(m["crow"], m["col"], n_in)
    y16 = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x, n_out)
    g16 = torch.ops.sparselayer.spmm_t(ccol, row, perm, m["values"], grad_y, n_in)
    y32 = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x.float(), n_out)
    g32 = torch.ops.sparselayer.spmm_t(ccol, row, perm, m["values"], grad_y.float(), n_in)
    assert torch.equal(y16, y32.bfloat16()), f"spmm, seed {seed}"
    assert torch.equal(g16, g32.bfloat16()), f"spmm_t, seed {seed}"


def test_bf16_matches_fp32_kernels_on_the_same_values():
    """Fed the same (bf16-representable) numbers, the bf16 mode sums exactly what the fp32 kernels sum."""
    seed = _seed()
    shape = (1100, 1500, 16500, 0, 70)
    m, x, grad_y, _ = _bf16_case(shape, "contiguous", seed)
    y16 = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x, shape[0])
    y32 = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x.float(), shape[0])
    assert torch.equal(y16, y32.bfloat16()), f"seed {seed}"
    g16 = torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x)
    g32 = torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y.float(), x.float())
    assert torch.equal(g16, g32), f"seed {seed}"


@pytest.mark.parametrize("spmm_kernel", ["default", "bf16-tiles"])
def test_bf16_deterministic(spmm_kernel, monkeypatch):
    for name, value in SORTED_BF16.get(spmm_kernel, {}).items():
        monkeypatch.setenv(name, value)
    seed = _seed()
    m, x, grad_y, _ = _bf16_case((1100, 1500, 16500, 0, 70), "contiguous", seed)
    assert_deterministic(m, x, grad_y, seed)


def test_bf16_values_are_rejected():
    """The kernels read values as float32: bf16 values must fail loudly, not be misread."""
    m, x, _, _ = _bf16_case((7, 96, 333, 0, 5), "contiguous", _seed())
    with pytest.raises(RuntimeError, match="bfloat16 activations need float32 values"):
        torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"].bfloat16(), x, 7)
    with pytest.raises(RuntimeError, match="float32, float64 and bfloat16"):
        torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x.half(), 7)


def test_bf16_opcheck():
    m, x, grad_y, _ = _bf16_case((7, 96, 333, 2, 5), "contiguous", _seed())
    ccol, row, perm = transpose_index(m["crow"], m["col"], 96)
    torch.library.opcheck(torch.ops.sparselayer.spmm.default, (m["crow"], m["col"], m["values"], x, 7))
    torch.library.opcheck(torch.ops.sparselayer.spmm_t.default, (ccol, row, perm, m["values"], grad_y, 96))
    torch.library.opcheck(torch.ops.sparselayer.sddmm.default, (m["crow"], m["col"], grad_y, x))
