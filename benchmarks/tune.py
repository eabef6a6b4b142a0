"""Tuning sweep for the CUDA kernels' tile shapes (developer tool; the shipped defaults come from its results).

    python benchmarks/tune.py            # times spmm over (J, P) and sddmm over threads and staging
    python benchmarks/tune.py --once     # one call of each op at 16384^2, 99% (for ncu)
    python benchmarks/tune.py --vary SPARSELAYER_SPMM_PVALS=1,2   # every op at the defaults, per value, twice
    python benchmarks/tune.py --vary "SPARSELAYER_SPMM_NB=2 SPARSELAYER_SPMM_J=16"   # one variant of two settings
    python benchmarks/tune.py --vary SPARSELAYER_SDDMM_T=256,512 --ops sddmm   # only some ops (spmm, spmm_t, bf16 spmm,
        # bf16 spmm_t, sddmm, fm sddmm, step, bf16 step; "fm": on feature-major operands, no copies)
    python benchmarks/tune.py --vary SPARSELAYER_SDDMM_SORTED=1,2 --ops sddmm --all-shapes   # every benchmark shape

Overrides are environment variables read by the kernels' launchers: SPARSELAYER_SPMM_DB (1: double-buffered
kernel, 2: single-buffered), SPARSELAYER_SPMM_NB (batch sub-tiles of 32 per block), SPARSELAYER_SPMM_J (rows per
block / 32), SPARSELAYER_SPMM_P (panel width), SPARSELAYER_SPMM_T (threads per block of the single-buffered kernel: 256 or 512),
SPARSELAYER_SPMM_FM (1: stage x from a feature-major copy with 16-byte cp.async, 2: from x's own layout), SPARSELAYER_SDDMM_T (256 or 512 threads of 8 slots), SPARSELAYER_SDDMM_P (tile columns), SPARSELAYER_SDDMM_FM
(1/2: tiles from feature-major copies or not), SPARSELAYER_SPMM_PVALS (1: the forward gathers the values into
packed order once per call, 2: its kernel reads them through each entry's position), SPARSELAYER_NO_CACHE=1 (rebuild
the per-topology index layouts every call), SPARSELAYER_SPMM_SORTED (1: the row-sorted spmm kernel, 2: the panel
kernels), SPARSELAYER_SORTED_R and SPARSELAYER_SORTED_P (its rows per block and panel width), SPARSELAYER_SDDMM_SORTED (1: the
row-sorted sddmm kernel, 2: the tile kernel), SPARSELAYER_SDDMM_SORTED_T (its threads: 256 or 512),
SPARSELAYER_SDDMM_SORTED_MIN_P (the narrowest panel its 512-thread shape takes, default 256),
SPARSELAYER_SDDMM_SORTED_MAX_P (the widest panel its width search tries), SPARSELAYER_SHARE_FM=2
(spmm_t and sddmm each copy the gradient feature-major, instead of sharing spmm_t's copy), SPARSELAYER_SORTED_DESC=2 (the
row-sorted spmm reads each chunk's descriptor from global memory instead of a panel's from shared memory),
SPARSELAYER_SORTED_BF16=2 (the row-sorted spmm widens bf16 x to its fp32 tiles instead of bf16 tiles of 64),
SPARSELAYER_SORTED_BF16_T (512 or 640: threads of the bf16-tile kernel; by default 640 below 5% density),
SPARSELAYER_SORTED_T (512 or 640: threads of the fp32 row-sorted spmm kernel; by default 640 below 5% density),
SPARSELAYER_SPMM_WINDOW=1 (the window kernel, fp32 on Hopper, opt-in; with SPARSELAYER_WINDOW_K its ring's panels,
SPARSELAYER_WINDOW_P their widest, SPARSELAYER_WINDOW_GRID its blocks). "step" is the layer step of benchmarks/kernels.py (ops.linear forward and
backward).
"""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import SHAPES, SPARSITIES, bench, layer_step, random_csr  # noqa: E402
from sparselayer import _cuda, ops  # noqa: E402
from sparselayer.csr import transpose_index  # noqa: E402

CASES = [(16384, 16384, 1024, 0.99), (16384, 16384, 1024, 0.97), (16384, 16384, 1024, 0.9), (4096, 4096, 4096, 0.99),
         (4096, 4096, 4096, 0.97), (4096, 4096, 4096, 0.9)]
SPMM = [  # DB, NB, J, P, T, FM (None: the launcher's default)
    (None, None, None, None, None, None), (None, None, None, None, None, 1), (None, None, None, None, None, 2),
    (2, None, None, None, 256, None),
    (1, None, None, None, None, None), (2, 1, 16, None, 512, None), (2, 1, 16, 256, 512, None),
    (2, 1, 8, None, 512, None), (2, 1, 8, 512, 512, None), (2, 1, 8, 256, 512, None), (2, 1, 8, None, 256, None),
    (2, 2, 8, None, 256, None), (2, 2, 4, None, 256, None), (2, 1, 4, None, 512, None),
]
SPMM_VARS = ("SPARSELAYER_SPMM_DB", "SPARSELAYER_SPMM_NB", "SPARSELAYER_SPMM_J", "SPARSELAYER_SPMM_P",
             "SPARSELAYER_SPMM_T", "SPARSELAYER_SPMM_FM")
SDDMM = [(None, None), (None, 1), (None, 2), (256, None), (512, None), (512, 2)]
# threads per block, FM (1: tiles from feature-major copies, 2: from the operands' own layouts)


def setenv(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = str(value)


def variants_of(spec: str) -> list[dict[str, str]]:
    """`NAME=V1,V2` -> [{NAME: V1}, {NAME: V2}]; `A=1 B=2;C=3` -> [{A: 1, B: 2}, {C: 3}]."""
    if ";" not in spec and " " not in spec.strip():
        name, _, values = spec.partition("=")
        return [{name: v} for v in values.split(",")]
    return [dict(pair.split("=", 1) for pair in part.split()) for part in spec.split(";") if part.strip()]


def vary(variants: list[dict[str, str]], only: set[str] | None = None, cases=CASES) -> None:
    """Same-run A/B of overrides: each op (or those in `only`) at the defaults and under each variant, in two
    interleaved rounds."""
    g = torch.Generator(device="cuda").manual_seed(0)
    for n_in, n_out, batch, sp in cases:
        crow, col, values_ = random_csr(n_out, n_in, sp, g)
        x = torch.randn(batch, n_in, device="cuda", generator=g)
        dy = torch.randn(batch, n_out, device="cuda", generator=g)
        ccol, row, perm = transpose_index(crow, col, n_in)
        xb, dyb = x.bfloat16(), dy.bfloat16()
        xf, dyf = x.t().contiguous().t(), dy.t().contiguous().t()  # feature-major: the kernels alone
        ref = ops.spmm(crow, col, values_, x, n_out)
        ops_ = {"spmm": lambda: ops.spmm(crow, col, values_, x, n_out),
                "spmm_t": lambda: ops.spmm_t(ccol, row, perm, values_, dy, n_in),
                "bf16 spmm": lambda: ops.spmm(crow, col, values_, xb, n_out),
                "bf16 spmm_t": lambda: ops.spmm_t(ccol, row, perm, values_, dyb, n_in),
                "sddmm": lambda: ops.sddmm(crow, col, dy, x),
                "fm sddmm": lambda: ops.sddmm(crow, col, dyf, xf),
                "step": layer_step(crow, col, ccol, row, perm, values_, x, dy, n_out),
                "bf16 step": layer_step(crow, col, ccol, row, perm, values_, xb, dyb, n_out)}
        ops_ = {name: fn for name, fn in ops_.items() if only is None or name in only}
        names = {name for v in variants for name in v}
        times = {}
        for _ in range(2):
            for v in [{}, *variants]:
                for name in names:
                    setenv(name, v.get(name))
                assert torch.allclose(ops.spmm(crow, col, values_, x, n_out), ref, rtol=1e-4, atol=1e-4), v
                label = " ".join(f"{k.removeprefix('SPARSELAYER_')}={val}" for k, val in v.items()) or "defaults"
                for op, fn in ops_.items():
                    times.setdefault((op, label), []).append(bench(fn))
        for name in names:
            setenv(name, None)
        line = [f"{n_in}x{n_out} b{batch} {sp}:"]
        for (op, label), t in times.items():
            line.append(f"{op} {label} " + "/".join(f"{m:.3f}" for m in t))
        print(" | ".join(line), flush=True)


def main():
    _cuda.ensure_loaded()
    if "--vary" in sys.argv:
        only = set(sys.argv[sys.argv.index("--ops") + 1].split(",")) if "--ops" in sys.argv else None
        cases = [(*shape, sp) for shape in SHAPES for sp in SPARSITIES] if "--all-shapes" in sys.argv else CASES
        vary(variants_of(sys.argv[sys.argv.index("--vary") + 1]), only, cases)
        return
    g = torch.Generator(device="cuda").manual_seed(0)
    once = "--once" in sys.argv
    for n_in, n_out, batch, sp in CASES[:1] if once else CASES:
        crow, col, values = random_csr(n_out, n_in, sp, g)
        x = torch.randn(batch, n_in, device="cuda", generator=g)
        dy = torch.randn(batch, n_out, device="cuda", generator=g)
        if once:
            ops.spmm(crow, col, values, x, n_out)
            ops.sddmm(crow, col, dy, x)
            torch.cuda.synchronize()
            return
        ccol, row, perm = transpose_index(crow, col, n_in)
        xb = x.bfloat16()
        ref = ops.spmm(crow, col, values, x, n_out)
        line = [f"{n_in}x{n_out} b{batch} {sp}:"]
        for config in SPMM:
            for name, v in zip(SPMM_VARS, config):
                setenv(name, v)
            y = ops.spmm(crow, col, values, x, n_out)
            assert torch.allclose(y, ref, rtol=1e-4, atol=1e-4), config
            db, nb, j, p, t, fm = config
            line.append(f"spmm DB{db}/NB{nb}/J{j}/P{p}/T{t}/FM{fm} "
                        f"{bench(lambda: ops.spmm(crow, col, values, x, n_out)):.3f}")
            if config[1:5] == (None, None, None, None):
                line.append(f"spmm_t {bench(lambda: ops.spmm_t(ccol, row, perm, values, dy, n_in)):.3f}")
                line.append(f"bf16 spmm {bench(lambda: ops.spmm(crow, col, values, xb, n_out)):.3f}")
        for name in SPMM_VARS:
            setenv(name, None)
        ref_sd = ops.sddmm(crow, col, dy, x)
        for threads, fm in SDDMM:
            setenv("SPARSELAYER_SDDMM_T", threads)
            setenv("SPARSELAYER_SDDMM_FM", fm)
            assert torch.allclose(ops.sddmm(crow, col, dy, x), ref_sd, rtol=1e-4, atol=1e-3), threads
            line.append(f"sddmm T{threads}/FM{fm} {bench(lambda: ops.sddmm(crow, col, dy, x)):.3f}")
        for name in ("SPARSELAYER_SDDMM_T", "SPARSELAYER_SDDMM_FM"):
            setenv(name, None)
        print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
