"""Row-major against feature-major operands of the sparse products, in one process, interleaved (v18).

    python benchmarks/layouts.py            # 16384^2 b1024 and 4096^2 b4096, at 99% and 97%; three rounds

Per case and round: the median ms (benchmarks/kernels.py's bench) of ops.spmm and ops.spmm_t on x (batch, n)
row-major and on the same values feature-major (x.t().contiguous().t()), fp32 and bf16 forward; then each call's
GPU kernel time (torch.profiler, kernels.py's kernel_ms). A row-major operand costs the kernels a transposed copy
per call (spmm_t's is cached while the same gradient tensor comes back, as it does here).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels import bench, kernel_ms, random_csr  # noqa: E402

from sparselayer import ops  # noqa: E402
from sparselayer.csr import transpose_index  # noqa: E402


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("benchmarks/layouts.py needs a CUDA GPU")
    g = torch.Generator(device="cuda").manual_seed(0)
    for n, batch in ((16384, 1024), (4096, 4096)):
        for sparsity in (0.99, 0.97):
            crow, col, values = random_csr(n, n, sparsity, g)
            ccol, row, perm = transpose_index(crow, col, n)
            x = torch.randn(batch, n, device="cuda", generator=g)
            dy = torch.randn(batch, n, device="cuda", generator=g)
            xf, dyf = x.t().contiguous().t(), dy.t().contiguous().t()
            xb, xbf = x.bfloat16(), xf.bfloat16()
            cases = {
                "fwd row-major": lambda: ops.spmm(crow, col, values, x, n),
                "fwd feature-major": lambda: ops.spmm(crow, col, values, xf, n),
                "spmm_t row-major": lambda: ops.spmm_t(ccol, row, perm, values, dy, n),
                "spmm_t feature-major": lambda: ops.spmm_t(ccol, row, perm, values, dyf, n),
                "bf16 fwd row-major": lambda: ops.spmm(crow, col, values, xb, n),
                "bf16 fwd feature-major": lambda: ops.spmm(crow, col, values, xbf, n),
            }
            for rnd in range(3):
                times = " | ".join(f"{k} {bench(f):.3f}" for k, f in cases.items())
                print(f"{n}^2 b{batch} {sparsity} round {rnd}, ms: {times}", flush=True)
            kernels = " | ".join(f"{k} {1e3 * kernel_ms(f):.1f}" for k, f in cases.items())
            print(f"{n}^2 b{batch} {sparsity} GPU kernel time per call, us: {kernels}", flush=True)


if __name__ == "__main__":
    main()
