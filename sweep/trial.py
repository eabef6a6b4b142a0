"""The worker side of a trial: `run_trial` calls the payload (by default `sweep.trainer.train`) and always
returns a plain dict, so the driver can tell a payload verdict (ok, diverged, error, pruned) from a lost worker
(the Dask future errs instead).
"""

from __future__ import annotations

import importlib
import math
import os
import socket
import time
import traceback
from typing import Any, Callable

__all__ = ["resolve_payload", "run_trial", "is_cuda_error"]

_PAYLOADS: dict[str, Callable] = {}


def resolve_payload(path: str) -> Callable:
    """'module:function' -> the function (cached per process)."""
    fn = _PAYLOADS.get(path)
    if fn is None:
        module, _, name = path.partition(":")
        fn = getattr(importlib.import_module(module), name)
        _PAYLOADS[path] = fn
    return fn


def is_cuda_error(exc: BaseException) -> bool:
    """A CUDA runtime error poisons the process's context: the worker must be restarted, not reused."""
    names = {type(e).__name__ for e in _chain(exc)}
    if names & {"AcceleratorError", "CudaError", "CUDAError"}:
        return True
    text = " ".join(str(e) for e in _chain(exc))
    return "CUDA error" in text or "cudaError" in text or "an illegal memory access" in text


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _worker_info() -> dict:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return {"worker": None, "host": socket.gethostname(), "pid": os.getpid()}
    info = dict(getattr(worker, "sparsesweep", {}) or {})
    info.update(worker=worker.address, host=socket.gethostname(), pid=os.getpid())
    return info


def _gpu_uuid(metrics: dict | None) -> str | None:
    """The physical GPU the trial ran on, when it used one (torch is already loaded by then)."""
    device = str((metrics or {}).get("device") or "")
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        index = int(device.split()[0].split(":")[1]) if ":" in device.split()[0] else torch.cuda.current_device()
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
    except Exception:
        return None


def _make_report(topic: str | None, key: str, prune_event: str | None):
    """The `report(epoch, value)` callback: streams intermediate values to the driver (Dask events) and raises
    optuna.TrialPruned once the driver has set this trial's prune event."""
    if topic is None:
        return None
    from distributed import Event, get_worker

    worker = get_worker()
    event = Event(prune_event) if prune_event else None

    def report(epoch: int, value: float) -> None:
        worker.log_event(topic, {"key": key, "epoch": int(epoch), "value": float(value)})
        if event is not None and event.is_set():
            import optuna

            raise optuna.TrialPruned(f"pruned by the driver after epoch {epoch}")

    return report


def run_trial(payload: str, config: dict, *, trial_key: str = "", report_topic: str | None = None,
              prune_event: str | None = None) -> dict[str, Any]:
    """Run one trial on this process. Never raises for a payload failure: returns
    {"status": ok|diverged|error|pruned|cuda-error, "reason", "metrics", timing and placement}."""
    started_at = time.time()
    info = _worker_info()
    status, reason, metrics = "ok", None, None
    try:
        fn = resolve_payload(payload)
        report = _make_report(report_topic, trial_key, prune_event)
        metrics = fn(dict(config), report=report)
        if not isinstance(metrics, dict):
            raise TypeError(f"the payload {payload} returned {type(metrics).__name__}, not a dict of metrics")
        if metrics.get("status", "ok") != "ok":
            status = str(metrics.get("status"))
            reason = metrics.get("reason") or f"the payload returned status {status!r}"
    except Exception as exc:  # noqa: BLE001 - every payload failure becomes a verdict with its reason
        if type(exc).__name__ == "TrialPruned":
            status, reason = "pruned", str(exc) or "pruned"
        else:
            status = "cuda-error" if is_cuda_error(exc) else "error"
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            reason = f"{type(exc).__name__}: {exc}"
            info["traceback"] = "".join(tb[-6:])[-4000:]
    finished_at = time.time()
    return {
        "status": status,
        "reason": reason,
        "metrics": _json_safe(metrics),
        "started_at": started_at,
        "finished_at": finished_at,
        "gpu_uuid": _gpu_uuid(metrics),
        **info,
    }


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:  # numpy / torch scalars
        return value.item()
    except Exception:
        return str(value)
