"""How busy a warp's lanes stay in the window kernel (csrc/spmm_window.cu), simulated (developer tool, CPU only).

    python benchmarks/window_sim.py                      # 16384 columns, 164 nonzeros per row (99%), rings below
    python benchmarks/window_sim.py --per-row 491 --rings 14x118

One block of 512 rows (16 warps of 32 lanes, one row per lane, rows sorted by length), uniformly random columns.
A warp steps in lockstep; at each step a lane multiplies its next entry if that entry's panel is resident. The
resident window is W = K - 1 panels of P columns (one ring slot is refilling). The window moves on once every lane
has passed its first panel. Refills are instant here, so the numbers are an upper bound. Prints, per ring, the share
of busy lanes over the steps taken (SIMD efficiency) and the steps against the ideal (entries / 32).
"""

import argparse

import numpy as np


def simulate(n_cols: int, per_row: int, rows: int, window: int, panel: int, vary: bool, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    lengths = rng.binomial(n_cols, per_row / n_cols, rows) if vary else np.full(rows, per_row)
    panels = [np.sort(rng.choice(n_cols, n, replace=False)) // panel for n in lengths]
    panels.sort(key=len, reverse=True)
    lens = np.array([len(p) for p in panels])
    table = np.full((rows, lens.max() + 1), np.iinfo(np.int64).max)
    for r, p in enumerate(panels):
        table[r, : len(p)] = p
    pos = np.zeros(rows, dtype=int)
    warps = rows // 32
    lowest, steps, busy, turn = 0, 0, 0, 0
    while (pos < lens).any():
        nxt = table[np.arange(rows), pos]
        while (nxt > lowest).all():
            lowest += 1
        runnable = (nxt < lowest + window) & (pos < lens)
        per_warp = runnable.reshape(warps, 32).any(1)
        w = next(w % warps for w in range(turn, turn + warps) if per_warp[w % warps])
        turn = w + 1
        lanes = slice(32 * w, 32 * w + 32)
        pos[lanes] += runnable[lanes]
        busy += runnable[lanes].sum()
        steps += 1
    return busy / (32 * steps), steps / (lens.sum() / 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cols", type=int, default=16384)
    parser.add_argument("--per-row", type=int, default=164, help="nonzeros per row (164: 99%% of 16384)")
    parser.add_argument("--rings", default="2x352,4x352,7x352,14x118,25x64",
                        help="comma-separated KxP: K ring slots (window K - 1 panels) of P columns")
    parser.add_argument("--vary", action="store_true", help="binomial row lengths (spmm_t's columns) instead of equal")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for ring in args.rings.split(","):
        k, p = (int(v) for v in ring.split("x"))
        if k < 2 or p < 1:
            parser.error(f"ring {ring!r}: need K >= 2 slots and P >= 1 columns")
        simd, ratio = simulate(args.n_cols, args.per_row, 512, k - 1, p, args.vary, args.seed)
        print(f"ring {k} x {p} (window {(k - 1) * p} columns): busy lanes {simd:.3f}, steps / ideal {ratio:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
