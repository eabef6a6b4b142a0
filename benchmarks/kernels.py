"""Time sparselayer's CUDA ops against dense cuBLAS and cuSPARSE (torch.sparse CSR), in one run, on one GPU.

    python benchmarks/kernels.py                 # all shapes and sparsities of the issue (about a minute)
    python benchmarks/kernels.py --quick         # two shapes, for a smoke test

For each (n_in x n_out, batch, sparsity) it times, with CUDA events after a warm-up, the median of many
repeats of:
  ours       spmm / spmm_t / sddmm through the sparselayer.ops wrappers (what SparseLinear calls; the index
             layouts cached per topology as in training, the values read through them every call; the
             forward and step are also timed with SPARSELAYER_NO_CACHE=1), and a layer step: the forward
             through ops.linear (the op SparseLinear uses) and its autograd backward (both gradients).
  cuSPARSE   torch.sparse.mm(W, x^T) and with W^T (a pre-built transposed CSR), sampled_addmm in its fast
             layout (second operand a transposed view of a feature-major copy; copies made outside the
             timing, which favours cuSPARSE), and the CSR transpose. Its layer step = forward + transpose
             (values change every step) + both products.
  dense      F.linear fp32 (TF32 off), the same with TF32, bf16, and a dense step (forward + both gradients) in
             fp32 and in bf16.
  bf16 mode  our three ops and the layer step with bfloat16 activations and float32 values (fp32 accumulation),
             against dense bf16 cuBLAS: the comparison for a user who would otherwise autocast a dense layer.
  SparseMLP  a 3-layer network's training step, activations feature-major between layers vs row-major.
  feature-major  on 4096^2 and larger, our ops and step again on feature-major activations (strides (1, batch):
             what SparseMLP passes between its layers, and the layout cuSPARSE gets): no per-call copies.
It prints, per op, the floor (max of FLOPs over the measured fp32 matmul rate and the compulsory bytes over
the measured copy bandwidth), our distance to it and our effective bandwidth; it checks our outputs
against cuSPARSE's; and it reports the peak memory of a SparseLinear training step at 16384^2, 99%.
Results go to benchmarks/results/kernels-<gpu>.{json,md} (and $OUT when set).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sparselayer  # noqa: E402
from sparselayer import ops  # noqa: E402
from sparselayer.csr import transpose_index  # noqa: E402

SHAPES = [  # (n_in, n_out, batch)
    (784, 512, 10000),
    (512, 512, 10000),
    (256, 256, 512),
    (4096, 4096, 512),
    (4096, 4096, 4096),
    (16384, 16384, 1024),
]
SPARSITIES = [0.9, 0.97, 0.99]


def bench(fn, target_ms: float = 300.0, min_reps: int = 10, max_reps: int = 200, warm: int = 5,
          warm_ms: float = 50.0) -> float:
    """Median milliseconds of fn() over repeats timed with CUDA events, after a warm-up of at least `warm` calls
    and `warm_ms` milliseconds. Each repeat waits for the previous one (as ../shared/anchors/anchors.py does), so a
    timing includes the launch of the op's first kernel; timings of one kernel within one run spread by up to about
    10% at 0.4-0.7 ms (benchmarks/kernels-notes.md, v13)."""
    t_end = time.perf_counter() + warm_ms / 1e3
    n = 0
    while n < warm or time.perf_counter() < t_end:
        fn()
        n += 1
        if n % 8 == 0:
            torch.cuda.synchronize()  # the clock measures the GPU's work, not the launch queue's
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    est = max((time.perf_counter() - t0) * 1e3, 1e-3)
    reps = int(min(max_reps, max(min_reps, target_ms / est)))
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def ceilings() -> dict:
    x = torch.empty(2**28, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x), min_reps=20)
    copy_gbps = 2 * x.numel() * 4 / ms / 1e6
    a = torch.randn(8192, 8192, device="cuda")
    b = torch.randn(8192, 8192, device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    fp32 = 2 * 8192**3 / bench(lambda: a @ b, min_reps=10) / 1e9
    torch.backends.cuda.matmul.allow_tf32 = True
    tf32 = 2 * 8192**3 / bench(lambda: a @ b, min_reps=10) / 1e9
    torch.backends.cuda.matmul.allow_tf32 = False
    return {"copy_GBps": copy_gbps, "fp32_TFLOPs": fp32, "tf32_TFLOPs": tf32}


# The fp32 spmm kernels the large shapes also time, each forced by its launcher's overrides.
FORCED_SPMM_KERNELS = {
    "row-sorted": {"SPARSELAYER_SPMM_SORTED": "1"},
    "panel": {"SPARSELAYER_SPMM_SORTED": "2"},
    "window": {"SPARSELAYER_SPMM_SORTED": "1", "SPARSELAYER_SPMM_WINDOW": "1"},
}


def random_csr(n_out: int, n_in: int, sparsity: float, g: torch.Generator):
    """Uniformly random columns, the same count in every row (as the anchors): crow, col int64, values fp32."""
    per_row = max(1, round(n_in * (1 - sparsity)))
    cols = torch.empty(n_out, per_row, dtype=torch.int64, device="cuda")
    for r0 in range(0, n_out, 2048):  # bounded scratch: 2048 x n_in random keys at a time
        r1 = min(n_out, r0 + 2048)
        keys = torch.rand(r1 - r0, n_in, device="cuda", generator=g)
        cols[r0:r1] = keys.argsort(dim=1)[:, :per_row].sort(dim=1).values
    crow = torch.arange(0, n_out * per_row + 1, per_row, device="cuda", dtype=torch.int64)
    values = torch.randn(n_out * per_row, device="cuda", generator=g)
    return crow, cols.reshape(-1), values


def new_gradient(dy: torch.Tensor) -> torch.Tensor:
    """dy as a new incoming gradient, which training hands the backward every step: the op's cached feature-major
    copy of the previous step's gradient (csrc/panel.cu, feature_major_shared: spmm_t makes it, sddmm reuses it) is
    keyed by the tensor's version, so without this every timed call after the first reused it and skipped the copy
    (the row-major spmm_t, sddmm and step timings up to v20). Host-side only: the data are not touched."""
    torch.autograd.graph.increment_version(dy)
    return dy


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def run_case(n_in: int, n_out: int, batch: int, sparsity: float, ceil: dict, g: torch.Generator) -> dict:
    crow, col, values = random_csr(n_out, n_in, sparsity, g)
    nnz = col.numel()
    ccol, row, perm = transpose_index(crow, col, n_in)
    x = torch.randn(batch, n_in, device="cuda", generator=g)
    dy = torch.randn(batch, n_out, device="cuda", generator=g)
    r = {"n_in": n_in, "n_out": n_out, "batch": batch, "sparsity": sparsity, "nnz": nnz}

    # ours, through the wrappers the layer uses
    r["ours_fwd_ms"] = bench(lambda: ops.spmm(crow, col, values, x, n_out))
    r["ours_spmm_t_ms"] = bench(lambda: ops.spmm_t(ccol, row, perm, values, new_gradient(dy), n_in))
    r["ours_sddmm_ms"] = bench(lambda: ops.sddmm(crow, col, new_gradient(dy), x))
    our_step = layer_step(crow, col, ccol, row, perm, values, x, dy, n_out)
    r["ours_step_ms"] = bench(our_step)
    # the same without the per-topology layout cache (csrc/cache.cu): what the first call after an evolution pays
    os.environ["SPARSELAYER_NO_CACHE"] = "1"
    try:
        r["ours_fwd_nocache_ms"] = bench(lambda: ops.spmm(crow, col, values, x, n_out))
        r["ours_step_nocache_ms"] = bench(our_step)
    finally:
        os.environ.pop("SPARSELAYER_NO_CACHE", None)
    if n_in * n_out >= 4096 * 4096:  # every fp32 spmm kernel, for the record (same sums, same order)
        for name, env in FORCED_SPMM_KERNELS.items():
            os.environ.update(env)
            try:
                r[f"ours_fwd_{name}_ms"] = bench(lambda: ops.spmm(crow, col, values, x, n_out))
                r[f"ours_spmm_t_{name}_ms"] = bench(
                    lambda: ops.spmm_t(ccol, row, perm, values, new_gradient(dy), n_in))
            finally:
                for var in env:
                    os.environ.pop(var, None)
    r.update(bf16_mode(crow, col, ccol, row, perm, values, x, dy, n_out))
    if n_in * n_out >= 4096 * 4096:
        r.update(feature_major_activations(crow, col, ccol, row, perm, values, x, dy, n_out))
        r.update(host_dispatch(crow, col, ccol, row, perm, values, x, dy, n_out))
    if n_in * n_out <= 1024 * 1024:  # small shapes: where does the time go?
        r.update(overhead(crow, col, values, x, n_out))

    # cuSPARSE through torch.sparse, in its fast layouts (feature-major copies made here, not timed)
    W = torch.sparse_csr_tensor(crow, col, values, (n_out, n_in))
    xt = x.t().contiguous()  # (n_in, batch)
    dyt = dy.t().contiguous()  # (n_out, batch)
    Wt = W.t().to_sparse_csr()
    r["cusparse_fwd_ms"] = bench(lambda: torch.sparse.mm(W, xt))
    r["cusparse_spmm_t_ms"] = bench(lambda: torch.sparse.mm(Wt, dyt))
    r["cusparse_sddmm_ms"] = bench(lambda: torch.sparse.sampled_addmm(W, dyt, xt.t(), beta=0.0))
    r["cusparse_transpose_ms"] = bench(lambda: W.t().to_sparse_csr())

    def cusparse_step():
        torch.sparse.mm(W, xt)
        wt = W.t().to_sparse_csr()
        torch.sparse.mm(wt, dyt)
        torch.sparse.sampled_addmm(W, dyt, xt.t(), beta=0.0)

    r["cusparse_step_ms"] = bench(cusparse_step)

    # correctness at this size, against cuSPARSE
    r["err_fwd"] = rel_err(ops.spmm(crow, col, values, x, n_out), torch.sparse.mm(W, xt).t())
    r["err_spmm_t"] = rel_err(ops.spmm_t(ccol, row, perm, values, dy, n_in), torch.sparse.mm(Wt, dyt).t())
    ref_sd = torch.sparse.sampled_addmm(W, dyt, xt.t(), beta=0.0).values()
    r["err_sddmm"] = rel_err(ops.sddmm(crow, col, dy, x), ref_sd)
    xb16, dyb16 = x.bfloat16(), dy.bfloat16()  # the bf16 mode against cuSPARSE's fp32 (bf16 rounding dominates)
    r["err_bf16_fwd"] = rel_err(ops.spmm(crow, col, values, xb16, n_out), torch.sparse.mm(W, xt).t())
    r["err_bf16_sddmm"] = rel_err(ops.sddmm(crow, col, dyb16, xb16), ref_sd)

    # dense
    Wd = torch.randn(n_out, n_in, device="cuda", generator=g)
    F = torch.nn.functional
    torch.backends.cuda.matmul.allow_tf32 = False
    r["dense_fwd_ms"] = bench(lambda: F.linear(x, Wd))
    r["dense_step_ms"] = bench(lambda: (F.linear(x, Wd), dy @ Wd, dy.t() @ x))
    torch.backends.cuda.matmul.allow_tf32 = True
    r["dense_tf32_fwd_ms"] = bench(lambda: F.linear(x, Wd))
    torch.backends.cuda.matmul.allow_tf32 = False
    xb, Wb, dyb = x.bfloat16(), Wd.bfloat16(), dy.bfloat16()
    r["dense_bf16_fwd_ms"] = bench(lambda: F.linear(xb, Wb))
    r["dense_bf16_step_ms"] = bench(lambda: (F.linear(xb, Wb), dyb @ Wb, dyb.t() @ xb))

    # floors: each operand moved once; FLOPs at the measured fp32 matmul rate
    bw = ceil["copy_GBps"] * 1e6  # bytes per ms
    flops_ms = ceil["fp32_TFLOPs"] * 1e9  # FLOP per ms
    flops = 2 * nnz * batch
    bytes_ = {
        "fwd": 4 * batch * (n_in + n_out) + 12 * nnz + 8 * (n_out + 1),
        "spmm_t": 4 * batch * (n_in + n_out) + 20 * nnz + 8 * (n_in + 1),
        "sddmm": 4 * batch * (n_in + n_out) + 12 * nnz + 8 * (n_out + 1),
    }
    for op, b in bytes_.items():
        floor = max(flops / flops_ms, b / bw)
        r[f"floor_{op}_ms"] = floor
        r[f"ours_{op}_over_floor"] = r[f"ours_{op}_ms"] / floor
        r[f"ours_{op}_GBps"] = b / r[f"ours_{op}_ms"] / 1e6
        r[f"ours_{op}_TFLOPs"] = flops / r[f"ours_{op}_ms"] / 1e9
    r["floor_step_ms"] = sum(r[f"floor_{op}_ms"] for op in bytes_)
    return r


def layer_step(crow, col, ccol, row, perm, values, x, dy, n_out):
    """A SparseLinear step without the module: ops.linear forward and its backward (both gradients) against dy."""
    vp = values.clone().requires_grad_(True)
    xp = x.clone().requires_grad_(True)

    def step():
        y = ops.linear(crow, col, ccol, row, perm, vp, xp, n_out)
        vp.grad = xp.grad = None
        y.backward(new_gradient(dy))

    return step


def feature_major_activations(crow, col, ccol, row, perm, values, x, dy, n_out) -> dict:
    """Our ops and layer step on feature-major activations (strides (1, batch)), as SparseMLP keeps them between
    its layers: results and gradients come out feature-major, so no per-call transposed copy. cuSPARSE is timed on
    this layout above (its feature-major copies made outside its timing)."""
    n_in = x.shape[1]
    xf, dyf = x.t().contiguous().t(), dy.t().contiguous().t()
    xbf, dybf = xf.bfloat16(), dyf.bfloat16()  # .bfloat16() keeps the strides
    return {
        "fm_fwd_ms": bench(lambda: ops.spmm(crow, col, values, xf, n_out)),
        "fm_spmm_t_ms": bench(lambda: ops.spmm_t(ccol, row, perm, values, dyf, n_in)),
        "fm_sddmm_ms": bench(lambda: ops.sddmm(crow, col, dyf, xf)),
        "fm_step_ms": bench(layer_step(crow, col, ccol, row, perm, values, xf, dyf, n_out)),
        "fm_bf16_fwd_ms": bench(lambda: ops.spmm(crow, col, values, xbf, n_out)),
        "fm_bf16_step_ms": bench(layer_step(crow, col, ccol, row, perm, values, xbf, dybf, n_out)),
        "err_fm_fwd": rel_err(ops.spmm(crow, col, values, xf, n_out), ops.spmm(crow, col, values, x, n_out)),
    }


def host_dispatch(crow, col, ccol, row, perm, values, x, dy, n_out) -> dict:
    """The layer step on feature-major activations with its products dispatched below autograd where no graph is
    recorded (ops._call, v19) against the same products through the Python autograd kernel that register_autograd
    installs (what every call paid before v19), interleaved in two rounds; and the host time of one forward call
    (CPU microseconds per call, launches queued without synchronising) each way."""
    from sparselayer import ops as ops_module

    xf, dyf = x.t().contiguous().t(), dy.t().contiguous().t()
    step = layer_step(crow, col, ccol, row, perm, values, xf, dyf, n_out)

    def fwd():
        ops.spmm(crow, col, values, xf, n_out)

    def host_us(fn, calls: int = 100) -> float:
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        us = (time.perf_counter() - t0) / calls * 1e6
        torch.cuda.synchronize()
        return us

    below = ops_module._call
    ways = {"below": below, "autograd_kernel": lambda op, *args: op(*args)}
    out: dict = {}
    try:
        for _ in range(2):
            for way, call in ways.items():
                ops_module._call = call
                out.setdefault(f"host_step_{way}_ms", []).append(bench(step))
                out.setdefault(f"host_fwd_{way}_us", []).append(host_us(fwd))
    finally:
        ops_module._call = below
    out = {k: min(v) for k, v in out.items()}
    out["host_step_kernels_ms"] = kernel_ms(step)  # the GPU's own time in the step: the rest is host time
    return out


def bf16_mode(crow, col, ccol, row, perm, values, x, dy, n_out) -> dict:
    """The bf16-activation mode: float32 values, bfloat16 activations (x, grad_y, outputs), fp32 accumulation."""
    n_in = x.shape[1]
    xb, dyb = x.bfloat16(), dy.bfloat16()
    step = layer_step(crow, col, ccol, row, perm, values, xb, dyb, n_out)
    return {
        "bf16_fwd_ms": bench(lambda: ops.spmm(crow, col, values, xb, n_out)),
        "bf16_spmm_t_ms": bench(lambda: ops.spmm_t(ccol, row, perm, values, new_gradient(dyb), n_in)),
        "bf16_sddmm_ms": bench(lambda: ops.sddmm(crow, col, new_gradient(dyb), xb)),
        "bf16_step_ms": bench(step),
    }


def kernel_ms(fn, calls: int = 20) -> float:
    """GPU time per call of fn (sum of its kernels' durations under torch.profiler), or NaN if unavailable."""
    try:
        from torch.profiler import ProfilerActivity, profile

        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
        total_us = 0.0
        for e in prof.key_averages():
            total_us += getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
        return total_us / calls / 1e3
    except Exception as e:  # report, don't lose the run
        print(f"kernel_ms: profiler failed ({type(e).__name__}: {e})", flush=True)
        return float("nan")


def overhead(crow, col, values, x, n_out) -> dict:
    """Small shapes: the forward through the wrapper vs the bare op vs its kernels alone (GPU time)."""
    op = torch.ops.sparselayer.spmm.default
    w = torch.randn(n_out, x.shape[1], device="cuda")
    return {
        "fwd_direct_op_ms": bench(lambda: op(crow, col, values, x, n_out)),
        "fwd_kernels_ms": kernel_ms(lambda: op(crow, col, values, x, n_out)),
        "dense_fwd_kernels_ms": kernel_ms(lambda: torch.nn.functional.linear(x, w)),
    }


def mlp_steps(n: int, batch: int, sparsity: float = 0.99, depth: int = 3) -> dict:
    """A SparseMLP of `depth` n x n layers (ReLU between them), one training step (forward, loss, backward), as the
    network runs it (activations feature-major between layers) and with the same layers chained on row-major
    activations (what SparseMLP did before v18: a transposed copy per product), in one run."""
    g = torch.Generator(device="cuda").manual_seed(2)
    model = sparselayer.SparseMLP([n] * (depth + 1), sparsity, output_activation=None, device="cuda", generator=g)
    x = torch.randn(batch, n, device="cuda", generator=g)

    def feature_major():
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    def row_major():
        model.zero_grad(set_to_none=True)
        h = x
        for i, layer in enumerate(model.layers):
            h = layer(h.contiguous())
            h = h if i == depth - 1 else model.hidden_activation(h)
        h.square().mean().backward()

    return {"n": n, "batch": batch, "sparsity": sparsity, "depth": depth,
            "feature_major_ms": bench(feature_major), "row_major_ms": bench(row_major)}


def memory_step(n: int = 16384, batch: int = 1024, sparsity: float = 0.99) -> dict:
    """Peak CUDA memory of a SparseLinear training step (forward, backward, SGD update, evolution)."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    g = torch.Generator(device="cuda").manual_seed(1)
    layer = sparselayer.SparseLinear(n, n, sparsity, device="cuda", generator=g)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)
    evolved = None
    try:
        from sparselayer.evolution import TopologyEvolver

        evolver = TopologyEvolver(layer, opt, growth="random", generator=g)
    except Exception as e:  # the evolver is optional here: report what was measured
        evolver, evolved = None, f"no evolution ({type(e).__name__}: {e})"
    x = torch.randn(batch, n, device="cuda", generator=g)
    loss = layer(x).square().sum()
    loss.backward()
    opt.step()
    if evolver is not None:
        evolver.step(1, 1e-3)
        evolved = "forward, backward, SGD update, TopologyEvolver.step (random growth)"
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return {"n": n, "batch": batch, "sparsity": sparsity, "nnz": layer.nnz, "peak_bytes": peak,
            "dense_weight_bytes": n * n * 4, "step": evolved}


def gpu_slug() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-").lower()


def table(res: dict) -> str:
    c = res["ceilings"]
    lines = [
        f"# sparselayer kernels on {res['device']} (torch {res['torch']}, CUDA {res['cuda']})",
        "",
        f"copy {c['copy_GBps']:.0f} GB/s, fp32 matmul {c['fp32_TFLOPs']:.1f} TFLOP/s, TF32 {c['tf32_TFLOPs']:.1f} TFLOP/s. "
        "Times: median ms. xC = cuSPARSE time / ours (higher is better); floor = max(FLOPs/fp32 rate, bytes/copy bw).",
        "",
        "| n_in x n_out | batch | sp | fwd | xC | spmm_t | xC | sddmm | xC | step | x torch.sparse | x dense fp32 "
        "| dense fp32 fwd | TF32 fwd | bf16 fwd | fwd/floor | spmm_t/floor | sddmm/floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["cases"]:
        lines.append(
            f"| {r['n_in']}x{r['n_out']} | {r['batch']} | {r['sparsity']:.2f} "
            f"| {r['ours_fwd_ms']:.3f} | {r['cusparse_fwd_ms'] / r['ours_fwd_ms']:.2f} "
            f"| {r['ours_spmm_t_ms']:.3f} | {r['cusparse_spmm_t_ms'] / r['ours_spmm_t_ms']:.2f} "
            f"| {r['ours_sddmm_ms']:.3f} | {r['cusparse_sddmm_ms'] / r['ours_sddmm_ms']:.2f} "
            f"| {r['ours_step_ms']:.3f} | {r['cusparse_step_ms'] / r['ours_step_ms']:.2f} "
            f"| {r['dense_step_ms'] / r['ours_step_ms']:.2f} "
            f"| {r['dense_fwd_ms']:.3f} | {r['dense_tf32_fwd_ms']:.3f} | {r['dense_bf16_fwd_ms']:.3f} "
            f"| {r['ours_fwd_over_floor']:.1f} | {r['ours_spmm_t_over_floor']:.1f} | {r['ours_sddmm_over_floor']:.1f} |"
        )
    lines += ["", "cuSPARSE (ms): fwd / spmm_t / sddmm / CSR transpose / step; ours: effective GB/s and TFLOP/s; "
              "errors vs cuSPARSE (relative norm)", ""]
    for r in res["cases"]:
        lines.append(
            f"- {r['n_in']}x{r['n_out']} b{r['batch']} {r['sparsity']:.2f}: cuSPARSE {r['cusparse_fwd_ms']:.3f} / "
            f"{r['cusparse_spmm_t_ms']:.3f} / {r['cusparse_sddmm_ms']:.3f} / {r['cusparse_transpose_ms']:.3f} / "
            f"{r['cusparse_step_ms']:.3f}; floors {r['floor_fwd_ms']:.3f} / {r['floor_spmm_t_ms']:.3f} / "
            f"{r['floor_sddmm_ms']:.3f}; ours {r['ours_fwd_GBps']:.0f} / {r['ours_spmm_t_GBps']:.0f} / "
            f"{r['ours_sddmm_GBps']:.0f} GB/s, {r['ours_fwd_TFLOPs']:.1f} / {r['ours_spmm_t_TFLOPs']:.1f} / "
            f"{r['ours_sddmm_TFLOPs']:.1f} TFLOP/s; err {r['err_fwd']:.1e} / {r['err_spmm_t']:.1e} / {r['err_sddmm']:.1e}"
        )
    lines += ["", "bf16-activation mode (float32 values, bfloat16 activations, fp32 accumulation), ms: "
              "fwd / spmm_t / sddmm / layer step, against dense bf16 cuBLAS fwd / step (F.linear and the two gradient "
              "matmuls in bf16), ratio = dense bf16 / ours; relative error of our bf16 fwd and sddmm vs cuSPARSE fp32", ""]
    for r in res["cases"]:
        if "bf16_fwd_ms" in r:
            lines.append(
                f"- {r['n_in']}x{r['n_out']} b{r['batch']} {r['sparsity']:.2f}: {r['bf16_fwd_ms']:.3f} / "
                f"{r['bf16_spmm_t_ms']:.3f} / {r['bf16_sddmm_ms']:.3f} / {r['bf16_step_ms']:.3f} (fp32 "
                f"{r['ours_fwd_ms']:.3f} / {r['ours_spmm_t_ms']:.3f} / {r['ours_sddmm_ms']:.3f} / {r['ours_step_ms']:.3f});"
                f" dense bf16 {r['dense_bf16_fwd_ms']:.3f} / {r['dense_bf16_step_ms']:.3f}: fwd "
                f"{r['dense_bf16_fwd_ms'] / r['bf16_fwd_ms']:.2f}x, step {r['dense_bf16_step_ms'] / r['bf16_step_ms']:.2f}x;"
                f" err {r['err_bf16_fwd']:.1e} / {r['err_bf16_sddmm']:.1e}")
    fm = [r for r in res["cases"] if "fm_fwd_ms" in r]
    if fm:
        lines += ["", "Feature-major activations (strides (1, batch): what SparseMLP passes between its layers, and the "
                  "layout cuSPARSE is given above): ours fwd / spmm_t / sddmm / step ms, xC = cuSPARSE time / ours "
                  "(step: torch.sparse's), x dense = dense fp32 step / ours; bf16-activation mode fwd / step against "
                  "dense bf16", ""]
        for r in fm:
            c = {op: r[f"cusparse_{op}_ms"] / r[f"fm_{op}_ms"] for op in ("fwd", "spmm_t", "sddmm", "step")}
            lines.append(
                f"- {r['n_in']}x{r['n_out']} b{r['batch']} {r['sparsity']:.2f}: {r['fm_fwd_ms']:.3f} / "
                f"{r['fm_spmm_t_ms']:.3f} / {r['fm_sddmm_ms']:.3f} / {r['fm_step_ms']:.3f} (xC {c['fwd']:.2f} / "
                f"{c['spmm_t']:.2f} / {c['sddmm']:.2f} / {c['step']:.2f}, x dense {r['dense_step_ms'] / r['fm_step_ms']:.2f}; "
                f"row-major {r['ours_fwd_ms']:.3f} / {r['ours_spmm_t_ms']:.3f} / {r['ours_sddmm_ms']:.3f} / "
                f"{r['ours_step_ms']:.3f}); bf16 {r['fm_bf16_fwd_ms']:.3f} / {r['fm_bf16_step_ms']:.3f} vs dense bf16 "
                f"{r['dense_bf16_fwd_ms']:.3f} / {r['dense_bf16_step_ms']:.3f}; err vs row-major {r['err_fm_fwd']:.1e}")
    hd = [r for r in res["cases"] if "host_step_below_ms" in r]
    if hd:
        lines += ["", "Host dispatch (feature-major activations): the layer step with the products called below "
                  "autograd where no graph is recorded (ops._call) vs through the Python autograd kernel of "
                  "torch.library.register_autograd (before v19), ms, best of two interleaved rounds, and the step's "
                  "kernels alone (GPU time under torch.profiler: the difference is time the GPU waits for the host); "
                  "host time of one forward call each way, microseconds of CPU", ""]
        for r in hd:
            lines.append(f"- {r['n_in']}x{r['n_out']} b{r['batch']} {r['sparsity']:.2f}: step "
                         f"{r['host_step_below_ms']:.3f} vs {r['host_step_autograd_kernel_ms']:.3f} ms (its kernels "
                         f"{r.get('host_step_kernels_ms', float('nan')):.3f} ms); forward host "
                         f"{r['host_fwd_below_us']:.0f} vs {r['host_fwd_autograd_kernel_us']:.0f} us")
    lines += ["", "Per-topology layout cache: fwd and step with the cache vs rebuilt every call "
              "(SPARSELAYER_NO_CACHE=1, what the first call after a topology change pays), ms", ""]
    for r in res["cases"]:
        if "ours_fwd_nocache_ms" in r:
            lines.append(f"- {r['n_in']}x{r['n_out']} b{r['batch']} {r['sparsity']:.2f}: fwd {r['ours_fwd_ms']:.3f} vs "
                         f"{r['ours_fwd_nocache_ms']:.3f}; step {r['ours_step_ms']:.3f} vs {r['ours_step_nocache_ms']:.3f}")
    lines += ["", "Every fp32 spmm kernel forced (csrc/spmm_sorted.cu; csrc/spmm.cu's panel kernels at their own "
              "defaults; csrc/spmm_window.cu, opt-in, Hopper only), fwd / spmm_t ms, the default's own timing in "
              "brackets", ""]
    for r in res["cases"]:
        if "ours_fwd_panel_ms" in r:
            forced = ", ".join(f"{name} {r[f'ours_fwd_{name}_ms']:.3f} / {r[f'ours_spmm_t_{name}_ms']:.3f}"
                               for name in FORCED_SPMM_KERNELS if f"ours_fwd_{name}_ms" in r)
            lines.append(f"- {r['n_in']}x{r['n_out']} b{r['batch']} {r['sparsity']:.2f}: {forced} "
                         f"[{r['ours_fwd_ms']:.3f} / {r['ours_spmm_t_ms']:.3f}]")
    small = [r for r in res["cases"] if "fwd_direct_op_ms" in r]
    if small:
        lines += ["", "Small shapes, forward: through ops.spmm / the bare torch.ops call / its kernels alone (GPU time "
                  "under torch.profiler) / dense F.linear's kernels alone, ms", ""]
        for r in small:
            lines.append(f"- {r['n_in']}x{r['n_out']} b{r['batch']} {r['sparsity']:.2f}: {r['ours_fwd_ms']:.4f} / "
                         f"{r['fwd_direct_op_ms']:.4f} / {r['fwd_kernels_ms']:.4f} / {r['dense_fwd_kernels_ms']:.4f}")
    lines += ["", "Targets of the issue (large shapes: 4096x4096 b4096 and 16384x16384 b1024):", ""]
    lines += targets(res)
    if res.get("mlp"):
        lines += ["", "SparseMLP training step (forward, loss, backward; ReLU between n x n layers at 99%): as the network "
                  "runs it, activations feature-major between layers, vs the same layers chained on row-major "
                  "activations, ms", ""]
        for m in res["mlp"]:
            lines.append(f"- {m['depth']} layers {m['n']}^2, b{m['batch']}: {m['feature_major_ms']:.3f} vs "
                         f"{m['row_major_ms']:.3f} ({m['row_major_ms'] / m['feature_major_ms']:.2f}x)")
    m = res.get("memory")
    if m:
        lines += ["", f"Memory: SparseLinear {m['n']}x{m['n']} at {m['sparsity']} sparsity, batch {m['batch']} "
                  f"({m['step']}): peak {m['peak_bytes'] / 2**20:.1f} MiB above baseline, vs "
                  f"{m['dense_weight_bytes'] / 2**20:.0f} MiB for one dense fp32 weight."]
    return "\n".join(lines)


def targets(res: dict) -> list[str]:
    """One line per target of the issue, with the measured ratio and whether it is met."""
    out = []
    large = [r for r in res["cases"] if (r["n_in"], r["batch"]) in ((4096, 4096), (16384, 1024))]
    for prefix, layout in (("ours", ""), ("fm", ", feature-major activations")):
        for r in (r for r in large if f"{prefix}_fwd_ms" in r):
            need = 1.5 if r["sparsity"] < 0.95 else 2.0
            for op in ("fwd", "spmm_t", "sddmm"):
                x = r[f"cusparse_{op}_ms"] / r[f"{prefix}_{op}_ms"]
                out.append(f"- {op} {r['n_in']}^2 b{r['batch']} {r['sparsity']:.2f}{layout}: {x:.2f}x cuSPARSE "
                           f"(target {need}x): {'met' if x >= need else 'NOT met'}")
    for r in large:
        x = r["cusparse_step_ms"] / r["ours_step_ms"]
        out.append(f"- layer step {r['n_in']}^2 b{r['batch']} {r['sparsity']:.2f}: {x:.2f}x torch.sparse "
                   f"(target 2.5x): {'met' if x >= 2.5 else 'NOT met'}")
        need = {0.99: 10.0, 0.9: 1.5}.get(r["sparsity"])
        if need:
            x = r["dense_step_ms"] / r["ours_step_ms"]
            out.append(f"- layer step {r['n_in']}^2 b{r['batch']} {r['sparsity']:.2f}: {x:.2f}x dense fp32 "
                       f"(target {need}x): {'met' if x >= need else 'NOT met'}")
        if "fm_step_ms" in r:
            x = r["cusparse_step_ms"] / r["fm_step_ms"]
            out.append(f"- layer step {r['n_in']}^2 b{r['batch']} {r['sparsity']:.2f}, feature-major activations: "
                       f"{x:.2f}x torch.sparse (target 2.5x): {'met' if x >= 2.5 else 'NOT met'}")
            if need:
                x = r["dense_step_ms"] / r["fm_step_ms"]
                out.append(f"- layer step {r['n_in']}^2 b{r['batch']} {r['sparsity']:.2f}, feature-major activations: "
                           f"{x:.2f}x dense fp32 (target {need}x): {'met' if x >= need else 'NOT met'}")
    for r in large:
        if r["sparsity"] == 0.99 and r["n_in"] == 16384:
            x = r["bf16_fwd_ms"]
            out.append(f"- bf16-activation mode, 99% forward {x:.3f} ms vs dense bf16 cuBLAS "
                       f"{r['dense_bf16_fwd_ms']:.3f} ms (target: faster): {'met' if x < r['dense_bf16_fwd_ms'] else 'NOT met'}")
            if "fm_bf16_fwd_ms" in r:
                x = r["fm_bf16_fwd_ms"]
                out.append(f"- the same, feature-major activations: {x:.3f} ms vs {r['dense_bf16_fwd_ms']:.3f} ms: "
                           f"{'met' if x < r['dense_bf16_fwd_ms'] else 'NOT met'}")
            out.append(f"- stretch, within 3x of the floor at 99%: fwd {r['ours_fwd_over_floor']:.1f}x, spmm_t "
                       f"{r['ours_spmm_t_over_floor']:.1f}x, sddmm {r['ours_sddmm_over_floor']:.1f}x of "
                       f"{r['floor_fwd_ms']:.3f} ms: NOT met")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two shapes only (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results directory")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/kernels.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    from sparselayer import _cuda

    t0 = time.perf_counter()
    _cuda.ensure_loaded()
    print(f"kernels built/loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "ceilings": ceilings(), "cases": []}
    c = res["ceilings"]
    print(f"{res['device']}: copy {c['copy_GBps']:.0f} GB/s, fp32 {c['fp32_TFLOPs']:.1f} TFLOP/s, "
          f"tf32 {c['tf32_TFLOPs']:.1f} TFLOP/s", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(256, 256, 512), (16384, 16384, 1024)] if args.quick else SHAPES
    for n_in, n_out, batch in shapes:
        for sp in SPARSITIES:
            r = run_case(n_in, n_out, batch, sp, c, g)
            res["cases"].append(r)
            print(f"{n_in}x{n_out} b{batch} sp{sp}: ours fwd {r['ours_fwd_ms']:.3f} spmm_t {r['ours_spmm_t_ms']:.3f} "
                  f"sddmm {r['ours_sddmm_ms']:.3f} step {r['ours_step_ms']:.3f} | cuSPARSE {r['cusparse_fwd_ms']:.3f} "
                  f"{r['cusparse_spmm_t_ms']:.3f} {r['cusparse_sddmm_ms']:.3f} step {r['cusparse_step_ms']:.3f} | "
                  f"dense {r['dense_fwd_ms']:.3f} step {r['dense_step_ms']:.3f} | err {r['err_fwd']:.1e} "
                  f"{r['err_spmm_t']:.1e} {r['err_sddmm']:.1e}", flush=True)
            torch.cuda.empty_cache()
    try:
        res["mlp"] = [mlp_steps(n, batch) for n, batch in ((4096, 4096), (16384, 1024)) if (n, n, batch) in shapes]
    except Exception as e:  # report, don't lose the timings
        res["mlp_error"] = f"{type(e).__name__}: {e}"
        print("SparseMLP step failed:", res["mlp_error"], flush=True)
    for m in res.get("mlp", []):
        print(f"SparseMLP {m['depth']} x {m['n']}^2 b{m['batch']} {m['sparsity']}: step {m['feature_major_ms']:.3f} ms "
              f"(row-major activations {m['row_major_ms']:.3f})", flush=True)
    torch.cuda.empty_cache()
    try:
        res["memory"] = memory_step()
    except Exception as e:  # report, don't lose the timings
        res["memory_error"] = f"{type(e).__name__}: {e}"
        print("memory step failed:", res["memory_error"], flush=True)
    text = table(res)
    name = f"kernels-{gpu_slug()}" + ("-quick" if args.quick else "")
    for d in {args.out, os.environ.get("OUT") or args.out}:
        Path(d).mkdir(parents=True, exist_ok=True)
        (Path(d) / f"{name}.json").write_text(json.dumps(res, indent=1))
        (Path(d) / f"{name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
