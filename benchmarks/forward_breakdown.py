"""Where the time of one large forward goes: each CUDA kernel's time, and the host's share (developer tool, needs a GPU).

    python benchmarks/forward_breakdown.py                       # 16384 x 16384, batch 1024, 99% sparsity
    python benchmarks/forward_breakdown.py --size 4096 --batch 4096 --sparsity 0.97

For the fp32 and bf16 forwards (and dense bf16 cuBLAS, the bf16 mode's baseline) it prints:
  - per kernel, its CUDA time per call (torch.profiler over 20 calls): the main kernel, the feature-major copy of x,
    the gather of the values into slot order;
  - host issue: host time per call while the GPU is busy (no syncs);
  - after sync: host time of a call made right after a sync, before which the GPU has nothing to run;
  - back-to-back: time per call over 50 calls queued together (GPU-bound);
  - bench: benchmarks/kernels.py's timing, where each repeat waits for the previous one (as the issue's anchors do),
    so a call's host time before its first kernel counts. bench minus back-to-back is the host's exposed share.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import bench, random_csr  # noqa: E402
from sparselayer import _cuda, ops  # noqa: E402


def kernel_table(fn, calls: int = 20) -> list[tuple[str, float]]:
    """(kernel name, microseconds per call) for the CUDA kernels fn launches, longest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / calls) for e in prof.key_averages() if e.device_time_total > 0]
    return sorted(rows, key=lambda r: -r[1])


def host_and_gpu_ms(fn) -> dict:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    issue = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        issue.append((time.perf_counter() - t0) / 10 * 1e3)
    torch.cuda.synchronize()
    after_sync = []
    for _ in range(20):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        after_sync.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(50):
        fn()
    end.record()
    torch.cuda.synchronize()
    return {"host issue": statistics.median(issue), "after sync": statistics.median(after_sync),
            "back-to-back": start.elapsed_time(end) / 50, "bench": bench(fn)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="n_in = n_out (default 16384)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--sparsity", type=float, default=0.99)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (this breaks down the CUDA kernels' time)")
    if not 0.0 < args.sparsity < 1.0:
        parser.error(f"--sparsity must lie strictly between 0 and 1, got {args.sparsity}")
    _cuda.ensure_loaded()
    n, batch = args.size, args.batch
    g = torch.Generator(device="cuda").manual_seed(0)
    crow, col, values = random_csr(n, n, args.sparsity, g)
    x = torch.randn(batch, n, device="cuda", generator=g)
    xb = x.bfloat16()
    dense_bf16 = torch.randn(n, n, device="cuda", generator=g).bfloat16()
    cases = {
        "fp32 forward": lambda: ops.spmm(crow, col, values, x, n),
        "bf16 forward": lambda: ops.spmm(crow, col, values, xb, n),
        "dense bf16 (F.linear)": lambda: torch.nn.functional.linear(xb, dense_bf16),
    }
    print(f"{torch.cuda.get_device_name()}: {n}x{n}, batch {batch}, sparsity {args.sparsity}")
    for name, fn in cases.items():
        times = host_and_gpu_ms(fn)
        print(f"{name}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()))
        for kernel, us in kernel_table(fn):
            print(f"    {us:9.1f} us  {kernel[:100]}")


if __name__ == "__main__":
    main()
