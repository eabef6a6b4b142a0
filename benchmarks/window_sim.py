"""How busy a warp's lanes stay in the window kernel (csrc/spmm_window.cu), simulated (developer tool, CPU only).

    python benchmarks/window_sim.py                      # 16384 columns, 164 nonzeros per row (99%), rings below
    python benchmarks/window_sim.py --per-row 491 --rings 14x118
    python benchmarks/window_sim.py --rings 14x118 --group 4     # a lane takes up to 4 resident entries per step

One block of 512 rows (16 warps of 32 lanes, one row per lane, rows sorted by length), uniformly random columns.
A warp steps in lockstep; at each step a lane multiplies its next entry if that entry's panel is resident. The
resident window is W = K - 1 panels of P columns (one ring slot is refilling). The window moves on once every lane
has passed its first panel. Refills are instant here, so the numbers are an upper bound. Prints, per ring, the share
of busy lanes over the steps taken (SIMD efficiency) and the steps against the ideal (entries / 32).
With --group G a lane takes, per step, the resident ones among the rest of its aligned group of G entries (as a
kernel whose lanes load their entries G at a time would), and the step costs the warp its busiest lane's count:
the busy share is then entries over 32 x that cost (v17 notes: 81% with 14 x 118 and G = 4 at 99%, steps / ideal 0.31).
"""

import argparse

import numpy as np


def simulate(n_cols: int, per_row: int, rows: int, window: int, panel: int, vary: bool, seed: int,
             group: int = 1) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    lengths = rng.binomial(n_cols, per_row / n_cols, rows) if vary else np.full(rows, per_row)
    panels = [np.sort(rng.choice(n_cols, n, replace=False)) // panel for n in lengths]
    panels.sort(key=len, reverse=True)
    lens = np.array([len(p) for p in panels])
    table = np.full((rows, lens.max() + group), np.iinfo(np.int64).max)
    for r, p in enumerate(panels):
        table[r, : len(p)] = p
    pos = np.zeros(rows, dtype=int)
    warps = rows // 32
    lowest, steps, slots, busy, turn = 0, 0, 0, 0, 0
    while (pos < lens).any():
        nxt = table[np.arange(rows), pos]
        while (nxt > lowest).all():
            lowest += 1
        # a lane takes the resident prefix of the rest of its aligned group; the warp's step costs its lanes' most
        ready = np.zeros(rows, dtype=int)
        for u in range(group):
            ready += (table[np.arange(rows), pos + u] < lowest + window) & (pos + u < lens) & (ready == u) & (pos % group + u < group)
        runnable = ready > 0
        per_warp = runnable.reshape(warps, 32).any(1)
        w = next(w % warps for w in range(turn, turn + warps) if per_warp[w % warps])
        turn = w + 1
        lanes = slice(32 * w, 32 * w + 32)
        pos[lanes] += ready[lanes]
        busy += ready[lanes].sum()
        slots += ready[lanes].max()
        steps += 1
    return busy / (32 * slots), steps / (lens.sum() / 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cols", type=int, default=16384)
    parser.add_argument("--per-row", type=int, default=164, help="nonzeros per row (164: 99%% of 16384)")
    parser.add_argument("--rings", default="2x352,4x352,7x352,14x118,25x64",
                        help="comma-separated KxP: K ring slots (window K - 1 panels) of P columns")
    parser.add_argument("--vary", action="store_true", help="binomial row lengths (spmm_t's columns) instead of equal")
    parser.add_argument("--group", type=int, default=1,
                        help="entries a lane takes per step, once all of them are resident (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.group < 1:
        parser.error(f"--group {args.group}: a lane takes at least 1 entry per step")
    for ring in args.rings.split(","):
        k, p = (int(v) for v in ring.split("x"))
        if k < 2 or p < 1:
            parser.error(f"ring {ring!r}: need K >= 2 slots and P >= 1 columns")
        simd, ratio = simulate(args.n_cols, args.per_row, 512, k - 1, p, args.vary, args.seed, args.group)
        print(f"ring {k} x {p} (window {(k - 1) * p} columns): busy lanes {simd:.3f}, steps / ideal {ratio:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
