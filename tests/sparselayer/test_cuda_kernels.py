"""The CUDA kernels (sparselayer/csrc) against float64 references: odd shapes, empty rows, batch 1, shapes that
take every kernel path (several column panels, batch tails, unaligned and strided inputs), poisoned outputs,
fresh random inputs each run (the seed is in every failure message), determinism, gradcheck, opcheck, and a
SparseMLP training step on CUDA against the same step on the CPU.

Skipped without a GPU (tests/conftest.py skips @pytest.mark.gpu); nothing here touches CUDA at import time.
"""

import copy
import os

import pytest
import torch

import sparselayer
from sparselayer import _cuda, ops
from sparselayer.csr import transpose_index

from csr_cases import assert_layout, dense_of, random_csr

pytestmark = pytest.mark.gpu

# (n_out, n_in, nnz, n_empty_rows, batch)
SHAPES = [
    (7, 96, 333, 0, 5),  # odd shape from the issue
    (7, 96, 333, 2, 1),  # batch 1, empty rows
    (50, 64, 300, 10, 40),  # empty rows, one batch tile plus a tail
    (130, 37, 400, 3, 33),  # n_in not a multiple of 4: scalar tile loads
    (300, 1000, 9000, 0, 77),  # several panels of 256 (density 3%)
    (1100, 1500, 16500, 0, 70),  # density 1%: panels of 512, R = 512 row blocks in sddmm
    (257, 2100, 60000, 5, 64),  # density 11%: many sddmm tiles
]
SHAPE_IDS = [f"{o}x{i}-nnz{n}-empty{e}-b{b}" for o, i, n, e, b in SHAPES]
DTYPES = [torch.float32, torch.float64]
LAYOUTS = ["contiguous", "transposed", "strided", "offset"]


@pytest.fixture(autouse=True, scope="module")
def _kernels_loaded():
    """These tests call torch.ops.sparselayer.* directly, bypassing the wrappers that load the kernels."""
    _cuda.ensure_loaded()


def _seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def _dense(batch, n, dtype, layout, g):
    """A (batch, n) CUDA tensor with the given memory layout and fresh random values."""
    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device="cuda", dtype=dtype)

    if layout == "contiguous":
        return rand(batch, n)
    if layout == "transposed":  # column-major: strides (1, batch)
        return rand(n, batch).t()
    if layout == "strided":  # every other column
        return rand(batch, 2 * n)[:, ::2]
    return rand(batch, n + 1)[:, 1:]  # starts one element into its storage: rows not 16-byte aligned


def _poison(numel: int, dtype: torch.dtype, copies: int = 4) -> None:
    """Leave NaN-filled blocks of the output's size in the caching allocator, so that an output the kernel
    allocates (uninitialised) and fails to write reads NaN."""
    bufs = [torch.full((max(numel, 1),), float("nan"), dtype=dtype, device="cuda") for _ in range(copies)]
    del bufs
    probe = torch.empty(max(numel, 1), dtype=dtype, device="cuda")
    assert probe.isnan().all(), "poisoning did not reach the allocator's free blocks"
    del probe


def _check(out, ref, dtype, seed, what):
    assert not out.isnan().any(), f"{what}: unwritten (NaN) elements, seed {seed}"
    ref = ref.to(out.device)
    scale = ref.abs().max().item() if ref.numel() else 0.0
    tol = 2e-5 if dtype == torch.float32 else 1e-12
    err = (out.double() - ref).abs().max().item() if ref.numel() else 0.0
    assert err <= tol * max(scale, 1.0), f"{what}: max error {err:.3g} (scale {scale:.3g}), seed {seed}"


def _case(shape, dtype, layout, seed):
    n_out, n_in, nnz, n_empty, batch = shape
    crow, col, values = random_csr(n_out, n_in, nnz, n_empty, dtype=torch.float64, seed=seed % (2**31))
    g = torch.Generator().manual_seed(seed + 1)
    x = _dense(batch, n_in, dtype, layout, g)
    grad_y = _dense(batch, n_out, dtype, layout, g)
    w64 = dense_of(crow, col, values, (n_out, n_in))
    cuda = dict(crow=crow.cuda(), col=col.cuda(), values=values.to(device="cuda", dtype=dtype))
    return cuda, x, grad_y, w64


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_spmm(dtype, shape, layout):
    seed = _seed()
    m, x, _, w64 = _case(shape, dtype, layout, seed)
    _poison(shape[4] * shape[0], dtype)
    y = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x, shape[0])
    assert y.shape == (shape[4], shape[0]) and y.dtype == dtype
    assert_layout(y, x)
    _check(y, x.double().cpu() @ w64.T, dtype, seed, "spmm")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_spmm_t(dtype, shape, layout):
    seed = _seed()
    m, _, grad_y, w64 = _case(shape, dtype, layout, seed)
    ccol, row, perm = transpose_index(m["crow"], m["col"], shape[1])
    _poison(shape[4] * shape[1], dtype)
    gx = torch.ops.sparselayer.spmm_t(ccol, row, perm, m["values"], grad_y, shape[1])
    assert gx.shape == (shape[4], shape[1]) and gx.dtype == dtype
    assert_layout(gx, grad_y)
    _check(gx, grad_y.double().cpu() @ w64, dtype, seed, "spmm_t")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sddmm(dtype, shape, layout):
    seed = _seed()
    m, x, grad_y, _ = _case(shape, dtype, layout, seed)
    crow, col = m["crow"].cpu(), m["col"].cpu()
    rows = torch.repeat_interleave(torch.arange(shape[0]), crow.diff())
    ref = (grad_y.double().cpu().T @ x.double().cpu())[rows, col]
    _poison(shape[2], dtype)
    gv = torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x)
    assert gv.shape == (shape[2],) and gv.dtype == dtype
    _check(gv, ref, dtype, seed, "sddmm")


def test_concentrated_nonzeros():
    """All nonzeros in one corner: far more in one panel (or tile) than the kernels stage for the average
    density, which takes spmm's unstaged path and several sddmm passes."""
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    n_out, n_in, batch = 64, 2048, 48
    dense = torch.zeros(n_out, n_in, dtype=torch.float64)
    dense[:32, :256] = torch.randn(32, 256, generator=g, dtype=torch.float64)  # 8192 nonzeros, density 6%
    crow = torch.zeros(n_out + 1, dtype=torch.int64)
    crow[1:33] = torch.arange(1, 33) * 256
    crow[33:] = 32 * 256
    col = torch.arange(256).repeat(32)
    values = dense[:32, :256].reshape(-1)
    x = torch.randn(batch, n_in, generator=g, dtype=torch.float64)
    dy = torch.randn(batch, n_out, generator=g, dtype=torch.float64)
    crow_c, col_c, values_c = crow.cuda(), col.cuda(), values.float().cuda()
    _poison(batch * n_out, torch.float32)
    y = torch.ops.sparselayer.spmm(crow_c, col_c, values_c, x.float().cuda(), n_out)
    _check(y, x @ dense.T, torch.float32, seed, "spmm, concentrated")
    ccol, row, perm = transpose_index(crow_c, col_c, n_in)
    _poison(batch * n_in, torch.float32)
    gx = torch.ops.sparselayer.spmm_t(ccol, row, perm, values_c, dy.float().cuda(), n_in)
    _check(gx, dy @ dense, torch.float32, seed, "spmm_t, concentrated")
    _poison(col.numel(), torch.float32)
    gv = torch.ops.sparselayer.sddmm(crow_c, col_c, dy.float().cuda(), x.float().cuda())
    _check(gv, (dy.T @ x)[:32, :256].reshape(-1), torch.float32, seed, "sddmm, concentrated")


def test_empty_and_degenerate():
    crow, col, values = random_csr(5, 3, 0, 5, dtype=torch.float32, device="cuda")
    x = torch.randn(4, 3, device="cuda")
    assert torch.equal(torch.ops.sparselayer.spmm(crow, col, values, x, 5), torch.zeros(4, 5, device="cuda"))
    assert torch.ops.sparselayer.sddmm(crow, col, torch.randn(4, 5, device="cuda"), x).shape == (0,)
    crow, col, values = random_csr(6, 8, 20, 0, dtype=torch.float32, device="cuda")
    assert torch.ops.sparselayer.spmm(crow, col, values, torch.randn(0, 8, device="cuda"), 6).shape == (0, 6)
    gv = torch.ops.sparselayer.sddmm(crow, col, torch.randn(0, 6, device="cuda"), torch.randn(0, 8, device="cuda"))
    assert torch.equal(gv, torch.zeros(20, device="cuda"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spmm_kernel", ["default", "sorted-rows"])
def test_deterministic(dtype, spmm_kernel, monkeypatch):
    """Same inputs, bit-identical outputs: fixed summation order, no atomics (the row-sorted kernel's warps take
    chunks in any order, and each row's sum stays in column order)."""
    if spmm_kernel != "default":
        _force(monkeypatch, spmm_kernel)
    seed = _seed()
    m, x, grad_y, _ = _case((1100, 1500, 16500, 0, 70), dtype, "contiguous", seed)
    assert_deterministic(m, x, grad_y, seed)


def assert_deterministic(m, x, grad_y, seed):
    """Each op twice on the same inputs (m: crow, col, values of a 1100 x 1500 matrix) gives the same bits."""
    n_out, n_in = grad_y.shape[1], x.shape[1]
    ccol, row, perm = transpose_index(m["crow"], m["col"], n_in)
    for run in (
        lambda: torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x, n_out),
        lambda: torch.ops.sparselayer.spmm_t(ccol, row, perm, m["values"], grad_y, n_in),
        lambda: torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x),
    ):
        assert torch.equal(run(), run()), f"seed {seed}"


# The window kernel's rings: the default, three 8-column panels on a 2-block grid (each block takes several
# (row block, batch tile) items and its ring runs on across them), and two 32-column panels on 3 blocks.
WINDOW_RINGS = {
    "default-ring": {},
    "three-slots-two-blocks": {"SPARSELAYER_WINDOW_K": "3", "SPARSELAYER_WINDOW_P": "8", "SPARSELAYER_WINDOW_GRID": "2"},
    "two-slots-three-blocks": {"SPARSELAYER_WINDOW_K": "2", "SPARSELAYER_WINDOW_P": "32",
                               "SPARSELAYER_WINDOW_GRID": "3"},
}
WINDOW_SHAPES = SHAPES + [(2000, 3000, 60000, 7, 130)]


@pytest.mark.parametrize("ring", list(WINDOW_RINGS))
@pytest.mark.parametrize("shape", WINDOW_SHAPES, ids=[*SHAPE_IDS, "2000x3000-nnz60000-empty7-b130"])
def test_window_kernel_bit_equal_to_sorted(shape, ring, monkeypatch):
    """The window kernel sums each row in column order as the row-sorted kernel does: the same bits, forward and
    transposed, and the float64 reference to rounding."""
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("the window kernel needs compute capability 9.0 (Hopper) or newer")
    seed = _seed()
    m, x, grad_y, w64 = _case(shape, torch.float32, "contiguous", seed)
    ccol, row, perm = transpose_index(m["crow"], m["col"], shape[1])
    monkeypatch.setenv("SPARSELAYER_SPMM_SORTED", "1")
    y_sorted = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x, shape[0])
    g_sorted = torch.ops.sparselayer.spmm_t(ccol, row, perm, m["values"], grad_y, shape[1])
    monkeypatch.setenv("SPARSELAYER_SPMM_WINDOW", "1")
    for name, value in WINDOW_RINGS[ring].items():
        monkeypatch.setenv(name, value)
    _poison(shape[4] * shape[0], torch.float32)
    y = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x, shape[0])
    _poison(shape[4] * shape[1], torch.float32)
    gx = torch.ops.sparselayer.spmm_t(ccol, row, perm, m["values"], grad_y, shape[1])
    assert torch.equal(y, y_sorted), f"spmm, seed {seed}"
    assert torch.equal(gx, g_sorted), f"spmm_t, seed {seed}"
    _check(y, x.double().cpu() @ w64.T, torch.float32, seed, "spmm (window)")


def test_rejects_mixed_devices():
    crow, col, values = random_csr(7, 96, 333, 0, dtype=torch.float32, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA tensor|device"):
        torch.ops.sparselayer.sddmm(crow, col, torch.randn(4, 7, device="cuda"), torch.randn(4, 96))


def test_gradcheck():
    seed = _seed()
    crow, col, values = random_csr(9, 13, 40, 2, dtype=torch.float64, device="cuda", seed=seed % (2**31))
    values.requires_grad_(True)
    x = torch.randn(5, 13, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, a: ops.spmm(crow, col, v, a, 9), (values, x))
    ccol, row, perm = transpose_index(crow, col, 13)
    dy = torch.randn(5, 9, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, g: ops.spmm_t(ccol, row, perm, v, g, 13), (values, dy))
    assert torch.autograd.gradcheck(lambda g, a: ops.sddmm(crow, col, g, a), (dy, x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    crow, col, values = random_csr(7, 96, 333, 2, dtype=dtype, device="cuda", seed=_seed() % (2**31))
    x = torch.randn(5, 96, dtype=dtype, device="cuda")
    dy = torch.randn(5, 7, dtype=dtype, device="cuda")
    ccol, row, perm = transpose_index(crow, col, 96)
    torch.library.opcheck(torch.ops.sparselayer.spmm.default, (crow, col, values, x, 7))
    torch.library.opcheck(torch.ops.sparselayer.spmm_t.default, (ccol, row, perm, values, dy, 96))
    torch.library.opcheck(torch.ops.sparselayer.sddmm.default, (crow, col, dy, x))


@pytest.mark.parametrize("kernels", ["default", "sorted-rows"])
def test_sparse_mlp_step_matches_cpu(kernels, monkeypatch):
    """One SGD step of a SparseMLP (forward, loss, backward, update) on CUDA equals the CPU step, also on the
    row-sorted kernels that large layers get."""
    if kernels != "default":
        _force(monkeypatch, kernels)
    seed = _seed()
    g = torch.Generator().manual_seed(seed % (2**31))
    cpu = sparselayer.SparseMLP([784, 300, 200, 10], sparsity=0.9, generator=g)
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(100, 784, generator=g)
    target = torch.rand(100, 10, generator=g)
    losses = []
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loss = torch.nn.functional.mse_loss(model(x.to(dev)), target.to(dev), reduction="sum")
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5), f"seed {seed}"
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-4, atol=1e-5, msg=f"{name} grad, seed {seed}")
        torch.testing.assert_close(p_gpu.detach().cpu(), p_cpu.detach(), rtol=1e-5, atol=1e-6, msg=f"{name}, seed {seed}")


# Every fp32 spmm kernel (single-buffered with 256 or 512 threads, staging x from a feature-major copy or from x
# itself; double-buffered cp.async; the row-sorted kernel with small and large blocks),
# whatever the default picks: the launchers' tuning overrides (benchmarks/tune.py) force each one.
_PANEL = {"SPARSELAYER_SPMM_SORTED": "2"}
# Block shapes of the row-sorted pack, shared by the spmm and sddmm variants: many small blocks and panels (several
# output passes per block), and 1024-row blocks (the pack's largest).
_SORTED_SMALL_BLOCKS = {"SPARSELAYER_SORTED_R": "96", "SPARSELAYER_SORTED_P": "32"}
_SORTED_1024_ROWS = {"SPARSELAYER_SORTED_R": "1024", "SPARSELAYER_SORTED_P": "352"}
KERNEL_VARIANTS = {
    "single-buffered": {**_PANEL, "SPARSELAYER_SPMM_DB": "2", "SPARSELAYER_SPMM_T": "256"},
    "single-buffered-512-threads": {**_PANEL, "SPARSELAYER_SPMM_DB": "2", "SPARSELAYER_SPMM_T": "512",
                                    "SPARSELAYER_SPMM_NB": "1", "SPARSELAYER_SPMM_J": "16"},
    "single-buffered-512-threads-256-rows": {**_PANEL, "SPARSELAYER_SPMM_DB": "2", "SPARSELAYER_SPMM_T": "512",
                                             "SPARSELAYER_SPMM_NB": "1", "SPARSELAYER_SPMM_J": "8"},
    "double-buffered": {**_PANEL, "SPARSELAYER_SPMM_DB": "1"},
    # x staged from a feature-major copy (16-byte cp.async), and from its own (batch, n) layout
    "feature-major-staging": {**_PANEL, "SPARSELAYER_SPMM_DB": "2", "SPARSELAYER_SPMM_FM": "1"},
    "feature-major-staging-512-threads": {**_PANEL, "SPARSELAYER_SPMM_DB": "2", "SPARSELAYER_SPMM_FM": "1",
                                          "SPARSELAYER_SPMM_T": "512", "SPARSELAYER_SPMM_NB": "1",
                                          "SPARSELAYER_SPMM_J": "16"},
    "feature-major-staging-two-batch-tiles": {**_PANEL, "SPARSELAYER_SPMM_DB": "2", "SPARSELAYER_SPMM_FM": "1",
                                              "SPARSELAYER_SPMM_NB": "2"},
    "row-major-staging": {**_PANEL, "SPARSELAYER_SPMM_DB": "2", "SPARSELAYER_SPMM_FM": "2"},
    # row-sorted (csrc/spmm_sorted.cu): default blocks, descriptors read from global memory, small and large blocks
    "sorted-rows": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SDDMM_SORTED": "1"},
    "sorted-rows-global-descriptors": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SORTED_DESC": "2"},
    "sorted-rows-small-blocks": {"SPARSELAYER_SPMM_SORTED": "1", **_SORTED_SMALL_BLOCKS},
    "sorted-rows-1024-rows": {"SPARSELAYER_SPMM_SORTED": "1", **_SORTED_1024_ROWS},
    # both thread counts on every shape (the default takes 640 below 5% density)
    "sorted-rows-512-threads": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SORTED_T": "512"},
    "sorted-rows-small-blocks-640-threads": {"SPARSELAYER_SPMM_SORTED": "1", **_SORTED_SMALL_BLOCKS,
                                             "SPARSELAYER_SORTED_T": "640"},
    "sorted-rows-1024-rows-640-threads": {"SPARSELAYER_SPMM_SORTED": "1", **_SORTED_1024_ROWS,
                                          "SPARSELAYER_SORTED_T": "640"},
    # the window kernel (csrc/spmm_window.cu; Hopper and newer, elsewhere the row-sorted kernel runs)
    "window": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SPMM_WINDOW": "1"},
    "window-small-ring": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SPMM_WINDOW": "1", "SPARSELAYER_WINDOW_K": "3",
                          "SPARSELAYER_WINDOW_P": "8", "SPARSELAYER_WINDOW_GRID": "2"},
}


def _force(monkeypatch, variant):
    for name, value in KERNEL_VARIANTS[variant].items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("variant", list(KERNEL_VARIANTS))
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_spmm_kernel_variants(shape, layout, variant, monkeypatch):
    _force(monkeypatch, variant)
    seed = _seed()
    m, x, grad_y, w64 = _case(shape, torch.float32, layout, seed)
    _poison(shape[4] * shape[0], torch.float32)
    y = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x, shape[0])
    assert_layout(y, x)
    _check(y, x.double().cpu() @ w64.T, torch.float32, seed, f"spmm ({variant})")
    ccol, row, perm = transpose_index(m["crow"], m["col"], shape[1])
    _poison(shape[4] * shape[1], torch.float32)
    gx = torch.ops.sparselayer.spmm_t(ccol, row, perm, m["values"], grad_y, shape[1])
    assert_layout(gx, grad_y)
    _check(gx, grad_y.double().cpu() @ w64, torch.float32, seed, f"spmm_t ({variant})")


# Every fp32 sddmm kernel, whatever the default picks: the tile kernel (sddmm.cu) with 256 or 512 threads, tiles
# staged from feature-major copies or from the operands' own layouts, wide and short tiles (long runs of a thread's
# slots in one row) or narrow ones; the row-sorted kernel (sddmm_sorted.cu) with the default blocks, 256 and 512
# threads, small and large blocks, and panels so wide that a dense corner's sums do not fit (the tile kernel takes
# over).
_TILES = {"SPARSELAYER_SDDMM_SORTED": "2"}
SDDMM_VARIANTS = {"256-threads": {**_TILES, "SPARSELAYER_SDDMM_T": "256"},
                  "512-threads": {**_TILES, "SPARSELAYER_SDDMM_T": "512"},
                  "feature-major-staging": {**_TILES, "SPARSELAYER_SDDMM_FM": "1"},
                  "feature-major-staging-512-threads": {**_TILES, "SPARSELAYER_SDDMM_FM": "1",
                                                        "SPARSELAYER_SDDMM_T": "512"},
                  "row-major-staging": {**_TILES, "SPARSELAYER_SDDMM_FM": "2"},
                  "wide-tiles": {**_TILES, "SPARSELAYER_SDDMM_P": "1024"},
                  "narrow-tiles": {**_TILES, "SPARSELAYER_SDDMM_P": "32"},
                  "sorted-rows": {"SPARSELAYER_SDDMM_SORTED": "1"},
                  "sorted-rows-256-threads": {"SPARSELAYER_SDDMM_SORTED": "1", "SPARSELAYER_SDDMM_SORTED_T": "256"},
                  "sorted-rows-512-threads": {"SPARSELAYER_SDDMM_SORTED": "1", "SPARSELAYER_SDDMM_SORTED_T": "512"},
                  "sorted-rows-512-threads-narrow-panels": {"SPARSELAYER_SDDMM_SORTED": "1",
                                                            "SPARSELAYER_SDDMM_SORTED_T": "512",
                                                            "SPARSELAYER_SDDMM_SORTED_MIN_P": "32",
                                                            "SPARSELAYER_SORTED_P": "64"},
                  "sorted-rows-small-blocks": {"SPARSELAYER_SDDMM_SORTED": "1", **_SORTED_SMALL_BLOCKS},
                  "sorted-rows-1024-rows": {"SPARSELAYER_SDDMM_SORTED": "1", **_SORTED_1024_ROWS},
                  "sorted-rows-wide-panels": {"SPARSELAYER_SDDMM_SORTED": "1", "SPARSELAYER_SORTED_P": "1024"}}


@pytest.mark.parametrize("variant", list(SDDMM_VARIANTS))
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_sddmm_kernel_variants(shape, layout, variant, monkeypatch):
    for name, value in SDDMM_VARIANTS[variant].items():
        monkeypatch.setenv(name, value)
    test_sddmm(torch.float32, shape, layout)


@pytest.mark.parametrize("variant", list(SDDMM_VARIANTS))
def test_concentrated_nonzeros_sddmm_variants(variant, monkeypatch):
    for name, value in SDDMM_VARIANTS[variant].items():
        monkeypatch.setenv(name, value)
    test_concentrated_nonzeros()


@pytest.mark.parametrize("variant", list(KERNEL_VARIANTS))
def test_concentrated_nonzeros_variants(variant, monkeypatch):
    """The unstaged path (a panel with more nonzeros than staged) of both kernels."""
    _force(monkeypatch, variant)
    test_concentrated_nonzeros()


@pytest.mark.parametrize("spmm_kernel", ["default", "sorted-rows"])
def test_cached_layout_follows_the_index(spmm_kernel, monkeypatch):
    """The per-topology layout cache (csrc/cache.cu) must never serve a stale layout: an in-place change of the
    index, new values, and a new index tensor at a reused address all give the right products."""
    if spmm_kernel != "default":
        _force(monkeypatch, spmm_kernel)
    seed = _seed()
    n_out, n_in, nnz, batch = 300, 1000, 9000, 40
    a = _case((n_out, n_in, nnz, 0, batch), torch.float32, "contiguous", seed)
    b = _case((n_out, n_in, nnz, 0, batch), torch.float32, "contiguous", seed + 7)
    m, x, grad_y, w64 = a
    crow, col, values = m["crow"].clone(), m["col"].clone(), m["values"].clone()

    def check_all(w, what):
        rows = torch.repeat_interleave(torch.arange(n_out), crow.cpu().diff())
        y = torch.ops.sparselayer.spmm(crow, col, values, x, n_out)
        _check(y, x.double().cpu() @ w.T, torch.float32, seed, f"spmm, {what}")
        ccol, row, perm = transpose_index(crow, col, n_in)
        gx = torch.ops.sparselayer.spmm_t(ccol, row, perm, values, grad_y, n_in)
        _check(gx, grad_y.double().cpu() @ w, torch.float32, seed, f"spmm_t, {what}")
        gv = torch.ops.sparselayer.sddmm(crow, col, grad_y, x)
        ref = (grad_y.double().cpu().T @ x.double().cpu())[rows, col.cpu()]
        _check(gv, ref, torch.float32, seed, f"sddmm, {what}")

    check_all(w64, "first call")
    check_all(w64, "cached")
    values.mul_(-2.0)  # values are read per call, never cached
    check_all(-2.0 * w64, "new values")
    m2, _, _, w64_2 = b
    crow.copy_(m2["crow"])  # the same tensors, rewritten in place: the version counter moves
    col.copy_(m2["col"])
    values.copy_(m2["values"])
    check_all(w64_2, "index rewritten in place")
    del crow, col
    torch.cuda.synchronize()
    crow, col = m["crow"].clone(), m["col"].clone()  # new tensors, possibly at the freed addresses
    values.copy_(m["values"])
    check_all(w64, "new index tensors")


@pytest.mark.parametrize("kernels", ["default", "sorted-rows"])
def test_shared_gradient_copy_follows_the_gradient(kernels, monkeypatch):
    """spmm_t keeps its feature-major copy of the gradient in the layout cache for sddmm: a gradient changed in place,
    or a new one at a reused address, must never be served the old copy."""
    if kernels != "default":
        _force(monkeypatch, kernels)
    seed = _seed()
    shape = (1100, 1500, 16500, 0, 70)
    m, x, grad_y, w64 = _case(shape, torch.float32, "contiguous", seed)
    ccol, row, perm = transpose_index(m["crow"], m["col"], shape[1])
    rows = torch.repeat_interleave(torch.arange(shape[0]), m["crow"].cpu().diff())

    def backward_pair(g, what):
        gx = torch.ops.sparselayer.spmm_t(ccol, row, perm, m["values"], g, shape[1])
        _check(gx, g.double().cpu() @ w64, torch.float32, seed, f"spmm_t, {what}")
        gv = torch.ops.sparselayer.sddmm(m["crow"], m["col"], g, x)
        ref = (g.double().cpu().T @ x.double().cpu())[rows, m["col"].cpu()]
        _check(gv, ref, torch.float32, seed, f"sddmm, {what}")
        return gv

    first = backward_pair(grad_y, "first")
    grad_y.mul_(-2.0)  # in place: the version counter moves
    gv = torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x)
    torch.testing.assert_close(gv, -2.0 * first, rtol=1e-6, atol=1e-6, msg=f"sddmm after an in-place change, seed {seed}")
    del grad_y, gv
    torch.cuda.synchronize()
    fresh = torch.randn(shape[4], shape[0], device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
    backward_pair(fresh, "a new gradient, possibly at the freed address")


def test_sorted_kernel_under_graph_capture(monkeypatch):
    """The row-sorted pack copies its sizes to the host, which a CUDA graph capture forbids: during a capture
    the products fall back to the panel kernel, and the replayed graph gives the right result."""
    _force(monkeypatch, "sorted-rows")
    seed = _seed()
    m, x, grad_y, w64 = _case((300, 1000, 9000, 0, 77), torch.float32, "contiguous", seed)
    eager = torch.ops.sparselayer.spmm(m["crow"], m["col"], m["values"], x, 300)
    crow, col = m["crow"].clone(), m["col"].clone()  # an index the cache has not seen: packed inside the capture
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        captured = torch.ops.sparselayer.spmm(crow, col, m["values"], x, 300)
    graph.replay()
    torch.cuda.synchronize()
    _check(captured, x.double().cpu() @ w64.T, torch.float32, seed, "spmm replayed from a graph")
    torch.testing.assert_close(captured, eager, rtol=0, atol=0, msg=f"graph vs row-sorted eager, seed {seed}")


def test_sorted_sddmm_under_graph_capture(monkeypatch):
    """As for spmm: during a capture sddmm falls back from the row-sorted kernel to the tile kernel (another
    summation order, so equal to the eager result to rounding, not bit for bit)."""
    _force(monkeypatch, "sorted-rows")
    seed = _seed()
    shape = (300, 1000, 9000, 0, 77)
    m, x, grad_y, _ = _case(shape, torch.float32, "contiguous", seed)
    rows = torch.repeat_interleave(torch.arange(shape[0]), m["crow"].cpu().diff())
    ref = (grad_y.double().cpu().T @ x.double().cpu())[rows, m["col"].cpu()]
    crow, col = m["crow"].clone(), m["col"].clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        captured = torch.ops.sparselayer.sddmm(crow, col, grad_y, x)
    graph.replay()
    torch.cuda.synchronize()
    _check(captured, ref, torch.float32, seed, "sddmm replayed from a graph")
    _check(torch.ops.sparselayer.sddmm(crow, col, grad_y, x), ref, torch.float32, seed, "sddmm, row-sorted eager")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sorted_sddmm_batch_splits(dtype, monkeypatch):
    """A grid short of blocks splits the batch (here 10 tiles, the last partial, in 2 splits) and adds the splits
    in order: right, and deterministic."""
    _force(monkeypatch, "sorted-rows")
    seed = _seed()
    shape = (1100, 1500, 16500, 7, 300)
    m, x, grad_y, _ = _case(shape, dtype, "contiguous", seed)
    rows = torch.repeat_interleave(torch.arange(shape[0]), m["crow"].cpu().diff())
    ref = (grad_y.double().cpu().T @ x.double().cpu())[rows, m["col"].cpu()]
    _poison(shape[2], torch.float32)
    gv = torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x)
    _check(gv, ref, torch.float32, seed, "sddmm, row-sorted, batch splits")  # fp32 sums of either
    assert torch.equal(gv, torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x)), f"seed {seed}"


@pytest.mark.parametrize("variant", ["sorted-rows", "sorted-rows-small-blocks-640-threads"])
def test_rebuilt_layouts_give_the_same_bits(variant, monkeypatch):
    """Every call rebuilding the row-sorted pack (SPARSELAYER_NO_CACHE=1, what another stream or an evicted cache
    entry pays) gives the same bits: the pack ranks rows of equal segment length in row order, and the sddmm's sum
    of a nonzero depends on the lane that takes its row."""
    _force(monkeypatch, variant)
    monkeypatch.setenv("SPARSELAYER_SDDMM_SORTED", "1")
    monkeypatch.setenv("SPARSELAYER_NO_CACHE", "1")
    seed = _seed()
    shape = (1100, 1500, 16500, 7, 300)
    m, x, grad_y, _ = _case(shape, torch.float32, "transposed", seed)
    ccol, row, perm = transpose_index(m["crow"], m["col"], shape[1])
    calls = {
        "spmm": lambda: ops.spmm(m["crow"], m["col"], m["values"], x, shape[0]),
        "spmm_t": lambda: ops.spmm_t(ccol, row, perm, m["values"], grad_y, shape[1]),
        "sddmm": lambda: ops.sddmm(m["crow"], m["col"], grad_y, x),
    }
    for name, call in calls.items():
        first = call()
        for _ in range(3):
            assert torch.equal(call(), first), f"{name} ({variant}) with its pack rebuilt, seed {seed}"


@pytest.mark.parametrize("precision", [torch.float32, torch.bfloat16])
def test_sorted_spmm_values_gathered_each_call(precision, monkeypatch):
    """The row-sorted kernels gather the values into a buffer kept with the cached layout: calls with other values
    on the same index (another tensor, then the first one changed in place, as an optimizer step does), queued
    without synchronising, each use their own values."""
    _force(monkeypatch, "sorted-rows")
    seed = _seed()
    shape = (1100, 1500, 16500, 7, 70)
    m, x, grad_y, w64 = _case(shape, torch.float32, "transposed", seed)
    x = x.to(precision)
    v1 = m["values"]
    v2 = torch.randn(v1.shape, generator=torch.Generator(device="cuda").manual_seed(seed % 2**31), device="cuda")
    n_out = shape[0]
    outs = [ops.spmm(m["crow"], m["col"], v, x, n_out) for v in (v1, v2)]
    v1.mul_(-0.5)
    outs.append(ops.spmm(m["crow"], m["col"], v1, x, n_out))
    tol = 2e-5 if precision == torch.float32 else 1e-2
    for out, v in zip(outs, (v1 * -2.0, v2, v1)):
        w = torch.sparse_csr_tensor(m["crow"], m["col"], v.double(), (n_out, shape[1])).to_dense()
        ref = x.double() @ w.T
        err = (out.double() - ref).abs().max().item()
        assert err <= tol * max(ref.abs().max().item(), 1.0), f"{precision}: max error {err:.3g}, seed {seed}"


@pytest.mark.parametrize("kernel", ["tiles", "sorted-rows"])
def test_sddmm_batch_splits_added_within_the_launch(kernel, monkeypatch):
    """The batch splits are added by the last block of each group to finish, which leaves the group's counter at
    zero for the next launch: calls in a row, interleaved with another index, and on a second stream (its own
    counters) all give the float64 reference and the same bits. The tile kernel splits a small matrix's long batch
    many ways (here one 40 x 150 tile: its 64 batch tiles in 64 splits), the row-sorted one in 2."""
    if kernel == "tiles":
        monkeypatch.setenv("SPARSELAYER_SDDMM_SORTED", "2")
        shape, other = (40, 150, 900, 3, 2048), (40, 150, 700, 0, 2048)
    else:
        _force(monkeypatch, "sorted-rows")
        shape, other = (1100, 1500, 16500, 7, 300), (1100, 1500, 14000, 0, 300)
    seed = _seed()
    m, x, grad_y, _ = _case(shape, torch.float32, "contiguous", seed)
    m2, x2, grad_y2, _ = _case(other, torch.float32, "contiguous", seed + 7)

    def reference(m, x, grad_y, shape):
        rows = torch.repeat_interleave(torch.arange(shape[0]), m["crow"].cpu().diff())
        return (grad_y.double().cpu().T @ x.double().cpu())[rows, m["col"].cpu()]

    ref, ref2 = reference(m, x, grad_y, shape), reference(m2, x2, grad_y2, other)
    first = torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x)
    _check(first, ref, torch.float32, seed, f"sddmm ({kernel}), batch splits")
    for _ in range(3):
        _poison(shape[2], torch.float32)
        assert torch.equal(torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x), first), f"seed {seed}"
        _check(torch.ops.sparselayer.sddmm(m2["crow"], m2["col"], grad_y2, x2), ref2, torch.float32, seed,
               f"sddmm ({kernel}), batch splits, another index")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        on_side = [torch.ops.sparselayer.sddmm(m["crow"], m["col"], grad_y, x) for _ in range(2)]
    torch.cuda.current_stream().wait_stream(side)
    for out in on_side:
        assert torch.equal(out, first), f"sddmm ({kernel}) on a second stream, seed {seed}"


def test_sparse_linear_after_set_topology():
    """SparseLinear on CUDA after its topology changes (the cache is keyed on the index tensors it replaces)."""
    seed = _seed()
    g = torch.Generator().manual_seed(seed % (2**31))
    layer = sparselayer.SparseLinear(200, 150, 0.95, generator=g).cuda()
    x = torch.randn(33, 200, generator=g).cuda()
    for step in range(2):
        y = layer(x)
        ref = x.double() @ layer.to_dense().double().T + layer.bias.double()
        torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5, msg=f"step {step}, seed {seed}")
        other = sparselayer.SparseLinear(200, 150, 0.97, generator=g).cuda()
        layer.set_topology(other.crow_indices, other.col_indices, other.values.detach())
