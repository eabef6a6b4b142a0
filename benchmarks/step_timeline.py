"""When the GPU waits for the host in one layer step (developer tool, needs a GPU).

    python benchmarks/step_timeline.py                        # 4096 x 4096, batch 4096, 99%, feature-major
    python benchmarks/step_timeline.py --size 16384 --batch 1024 --row-major

benchmarks/kernels.py times a step as the issue's anchors time everything: each repeat waits for the one before, so
the host's time before the step's first kernel, and any wait of the GPU inside the step, count. This prints where
those waits are. Each timed call is preceded by a marker kernel on an idle GPU; from torch.profiler's CUDA timeline
(no CPU activity recorded, which would slow the host down further) it lists, per call, each kernel's duration and the
gap before it (from the marker's end): gaps are time the GPU had nothing to run because the host had not launched it.
The profiler's launch hooks add a little host time to each launch.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import bench, layer_step, random_csr  # noqa: E402
from sparselayer import _cuda, ops  # noqa: E402
from sparselayer.csr import transpose_index  # noqa: E402


def timelines(fn, calls: int = 5) -> list[list[tuple[str, float, float]]]:
    """Per call of fn: (kernel name, gap before it in us, its duration in us), the gap of the first kernel counted
    from the end of a marker kernel launched right before the call on an idle GPU."""
    from torch.profiler import ProfilerActivity, profile

    marker = torch.zeros(1, device="cuda")
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls + 1):  # the first call under the profiler pays its start-up: not reported
            torch.cuda.synchronize()
            marker.fill_(1.0)
            fn()
            torch.cuda.synchronize()
    events = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                    key=lambda e: e.time_range.start)
    out, prev_end = [], None
    for e in events:
        if "fill" in e.name.lower():  # the marker: a new call starts at its end
            out.append([])
            prev_end = e.time_range.end
        elif out:
            name = e.name.replace("(anonymous namespace)::", "").split("(")[0].split("::")[-1]
            out[-1].append((name, e.time_range.start - prev_end, e.time_range.elapsed_us()))
            prev_end = e.time_range.end
    return out[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="n_in = n_out (default 4096)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--row-major", action="store_true", help="row-major activations (default: feature-major)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/step_timeline.py needs a CUDA GPU")
    _cuda.ensure_loaded()
    n, batch = args.size, args.batch
    g = torch.Generator(device="cuda").manual_seed(0)
    crow, col, values = random_csr(n, n, args.sparsity, g)
    ccol, row, perm = transpose_index(crow, col, n)
    x = torch.randn(batch, n, device="cuda", generator=g)
    dy = torch.randn(batch, n, device="cuda", generator=g)
    if not args.row_major:
        x, dy = x.t().contiguous().t(), dy.t().contiguous().t()
    layout = "row-major" if args.row_major else "feature-major"
    cases = {"forward (ops.spmm)": lambda: ops.spmm(crow, col, values, x, n),
             "layer step (ops.linear forward + backward)": layer_step(crow, col, ccol, row, perm, values, x, dy, n)}
    print(f"{torch.cuda.get_device_name()}: {n} x {n}, batch {batch}, {args.sparsity} sparsity, {layout} activations")
    for label, fn in cases.items():
        print(f"\n{label}: bench {bench(fn):.3f} ms (each repeat waits for the one before)")
        for i, call in enumerate(timelines(fn)):
            waits, busy = sum(c[1] for c in call), sum(c[2] for c in call)
            steps = " ; ".join(f"wait {gap:.0f} | {name} {dur:.0f}" for name, gap, dur in call)
            print(f"  call {i}: {waits + busy:.0f} us = kernels {busy:.0f} + waits {waits:.0f}: {steps}")


if __name__ == "__main__":
    main()
