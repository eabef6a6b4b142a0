"""Stand-in payloads for measuring and testing the platform itself (not the trainer).

`noop` returns at once (benchmarks/platform_overhead.py). `synthetic` is a cheap objective with optional
delays and faults, chosen per sweep with `payload: sweep.payloads:synthetic`, so the fault handling can be
exercised on a real cluster: it can raise, diverge, or write its pid to a file so that a test can kill it.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

__all__ = ["noop", "synthetic"]


def noop(config: dict, report=None) -> dict:
    return {"status": "ok", "reason": None, "score": 0.0, "best_test_accuracy": 0.0, "ms_per_iteration": 0.0}


def synthetic(config: dict, report=None) -> dict:
    """score = 1 - (x - 0.3)^2 (best at x = 0.3), cost = 10 * x ms. Keys (all optional): x, epochs, sleep
    (seconds per epoch), pid_dir (write `<pid>-<id>.pid` there while running), raise_above, diverge_above,
    cuda_error_above (raise what a CUDA fault looks like)."""
    x = float(config.get("x", 0.5))
    epochs = int(config.get("epochs", 1))
    sleep = float(config.get("sleep", 0.0))
    pid_file = None
    if config.get("pid_dir"):
        pid_file = Path(config["pid_dir"]) / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.pid"
        pid_file.write_text(str(os.getpid()))
    try:
        if config.get("cuda_error_above") is not None and x > float(config["cuda_error_above"]):
            # what torch raises after a bad kernel; the platform must restart the worker, not reuse it
            raise RuntimeError("CUDA error: an illegal memory access was encountered (synthetic)")
        if config.get("raise_above") is not None and x > float(config["raise_above"]):
            raise ValueError(f"synthetic failure: x={x:.3f} > raise_above={config['raise_above']}")
        score = 1.0 - (x - 0.3) ** 2
        curve = []
        for epoch in range(epochs):
            time.sleep(sleep)
            curve.append(score * (epoch + 1) / epochs)
            if report is not None:
                report(epoch, curve[-1])
        if config.get("diverge_above") is not None and x > float(config["diverge_above"]):
            return {"status": "diverged", "reason": f"loss became NaN (x={x:.3f})", "test_accuracy": curve}
        return {
            "status": "ok", "reason": None, "score": score, "best_test_accuracy": max(curve, default=score),
            "ms_per_iteration": 10.0 * x, "test_accuracy": curve, "epochs_run": epochs, "device": "cpu",
        }
    finally:
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
