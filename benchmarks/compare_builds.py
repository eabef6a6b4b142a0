"""Times the ops and a layer step of the sparselayer package under ROOT, to compare two checkouts (needs a GPU).

    git worktree add /tmp/base 8460d6b                     # the build to compare against
    for round in 1 2; do
      SPARSESWEEP_CACHE_DIR=/tmp/base-build python benchmarks/compare_builds.py /tmp/base
      python benchmarks/compare_builds.py .
    done

Each process imports sparselayer from ROOT (give each checkout its own build cache, as above) and prints, per shape,
on feature-major activations: forward, spmm_t, sddmm and layer step (median ms, timed by benchmarks/kernels.py's
bench on its topologies and layer step; the logs of v20 and v21 fixed 200 repeats instead), and the host time of
one forward, sddmm and step call (median us of CPU, the GPU idle at the call). Interleave the processes over rounds:
timings drift between runs by more than most changes.
`results/history/ab-v20-host-path.log` is v19 (base) against v20, `ab-v21-sddmm.log` v20 against v21 (`--large`).
"""

import argparse
import os
import statistics
import sys
import time

SHAPES = [(4096, 4096, 4096, 0.99), (4096, 4096, 512, 0.99), (784, 512, 10000, 0.9), (16384, 16384, 1024, 0.99)]
# --large: the two large benchmark shapes at every sparsity (kernel changes, where host time is not the question)
LARGE = [(n, n, b, sp) for n, b in ((16384, 1024), (4096, 4096)) for sp in (0.99, 0.97, 0.9)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the checkout whose sparselayer package to time")
    parser.add_argument("--large", action="store_true", help="the two large shapes at 90, 97 and 99%% instead")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    sys.path.insert(0, root)
    import torch

    import sparselayer
    from sparselayer import _cuda, ops
    from sparselayer.csr import transpose_index

    if not sparselayer.__file__.startswith(root):
        raise SystemExit(f"imported {sparselayer.__file__}, not the package under {root}")
    _cuda.ensure_loaded()
    # The benchmark's own timing, topologies and step, run on the package imported above (kernels.py's import of
    # sparselayer finds it loaded).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from kernels import bench, layer_step, random_csr

    def host_us(fn, calls: int = 50) -> float:
        times = []
        for _ in range(calls):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
        return statistics.median(times) * 1e6

    for n_in, n_out, batch, sparsity in LARGE if args.large else SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        crow, col, vals = random_csr(n_out, n_in, sparsity, g)
        ccol, row, perm = transpose_index(crow, col, n_in)
        x = torch.randn(batch, n_in, device="cuda", generator=g).t().contiguous().t()  # feature-major
        dy = torch.randn(batch, n_out, device="cuda", generator=g).t().contiguous().t()
        step = layer_step(crow, col, ccol, row, perm, vals, x, dy, n_out)

        def fwd():
            ops.spmm(crow, col, vals, x, n_out)

        def sddmm():
            ops.sddmm(crow, col, dy, x)

        r = {"fwd": bench(fwd), "spmm_t": bench(lambda: ops.spmm_t(ccol, row, perm, vals, dy, n_in)),
             "sddmm": bench(sddmm), "step": bench(step),
             "fwd_host_us": host_us(fwd), "sddmm_host_us": host_us(sddmm), "step_host_us": host_us(step)}
        print(root, f"{n_in}x{n_out} b{batch} {sparsity}", " ".join(f"{k} {v:.4f}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
