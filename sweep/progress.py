"""Live progress of a sweep (tqdm) and the idle time between trials on each worker."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

from tqdm.auto import tqdm

__all__ = ["SweepProgress", "IdleSummary", "idle_gaps", "summarize_idle"]


class SweepProgress:
    """done / failed / running / best so far, on one tqdm bar (stderr)."""

    def __init__(self, name: str, total: int, initial: int, *, enabled: bool = True, out=None):
        self.bar = tqdm(total=total, initial=min(initial, total), desc=f"sweep {name}", unit="trial",
                        file=out or sys.stderr, disable=not enabled, dynamic_ncols=True, leave=True)
        self._last = initial

    def update(self, counted: int, failed: int, running: int, best: str) -> None:
        if counted > self._last:
            self.bar.update(min(counted, self.bar.total) - min(self._last, self.bar.total))
            self._last = counted
        self.bar.set_postfix_str(f"failed={failed} running={running} best={best}", refresh=True)

    def write(self, message: str) -> None:
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


@dataclass
class IdleSummary:
    gaps: dict[str, list[float]] = field(default_factory=dict)  # worker -> idle seconds before each later trial

    @property
    def all_gaps(self) -> list[float]:
        return [g for gs in self.gaps.values() for g in gs]

    @property
    def mean(self) -> float:
        gaps = self.all_gaps
        return sum(gaps) / len(gaps) if gaps else math.nan

    @property
    def max(self) -> float:
        return max(self.all_gaps, default=math.nan)

    def as_dict(self) -> dict:
        return {"n_gaps": len(self.all_gaps), "mean_s": self.mean, "max_s": self.max,
                "per_worker": {w: {"n": len(g), "mean_s": sum(g) / len(g) if g else None, "max_s": max(g, default=None)}
                               for w, g in self.gaps.items()}}

    def describe(self) -> str:
        gaps = self.all_gaps
        if not gaps:
            return "idle time between trials: no worker ran two trials in a row"
        return (f"idle time between trials per worker: mean {self.mean * 1e3:.0f} ms, max {self.max * 1e3:.0f} ms "
                f"({len(gaps)} gaps on {len(self.gaps)} worker(s))")


def idle_gaps(records: list[dict], slots_per_worker: int = 1) -> IdleSummary:
    """records: {"worker", "started_at", "finished_at"} per trial. With `c` slots on a worker, the (c+i)-th trial
    to start could only start once the i-th trial to finish had freed its slot: gap = start[c+i] - end[i]."""
    by_worker: dict[str, list[dict]] = {}
    for r in records:
        if r.get("worker") and r.get("started_at") is not None and r.get("finished_at") is not None:
            by_worker.setdefault(r["worker"], []).append(r)
    summary = IdleSummary()
    for worker, rs in by_worker.items():
        starts = sorted(r["started_at"] for r in rs)
        ends = sorted(r["finished_at"] for r in rs)
        gaps = [max(0.0, starts[slots_per_worker + i] - ends[i]) for i in range(len(starts) - slots_per_worker)]
        summary.gaps[worker] = gaps
    return summary


def summarize_idle(trials, run_id: str | None = None, slots_per_worker: int = 1) -> IdleSummary:
    """From Optuna trials' user attrs (worker, started_at, finished_at), restricted to one driver run."""
    records = [t.user_attrs for t in trials if run_id is None or t.user_attrs.get("run_id") == run_id]
    return idle_gaps(records, slots_per_worker)
