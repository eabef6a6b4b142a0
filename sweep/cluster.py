"""Where trials run: one Dask worker per GPU (dask-cuda), a LocalCluster of processes on a CPU-only machine,
or an existing scheduler whose workers were started with `dask cuda worker` on each node.

Every worker gets `SweepWorkerPlugin`: it sets the environment, pins torch's CPU threads, records which GPU the
worker is pinned to, and warms up once (data files, the CUDA extension) so trials don't pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from dataclasses import dataclass

import dask
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["ClusterError", "WORKER_ENV", "visible_gpus", "parse_gpus", "start_cluster", "SweepWorkerPlugin"]

log = logging.getLogger(__name__)

# NVLink multicast stays off in every process the sweep starts (see KINDS.md of the GPU machines).
WORKER_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
# The platform counts attempts itself (runner.py): a task on a worker that died errs at once (KilledWorker)
# instead of being rerun behind the driver's back.
DASK_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.work-stealing": True,
}


class ClusterError(RuntimeError):
    """The cluster could not be started or reached; the message says what to do."""


def parse_gpus(text: str | None) -> list[str] | None:
    """`--gpus 0,2` -> ["0", "2"]; GPU UUIDs (GPU-...) are accepted too."""
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError("--gpus needs a comma-separated list such as 0,1 (indices or GPU-UUIDs)")
    for item in items:
        if not (item.isdigit() or item.startswith("GPU-") or item.startswith("MIG-")):
            raise ValueError(f"--gpus: {item!r} is not a GPU index or UUID; use e.g. --gpus 0,1")
    if len(set(items)) != len(items):
        raise ValueError(f"--gpus lists a GPU twice: {text}")
    return items


def visible_gpus() -> int:
    """Number of GPUs this process can see (NVML, else torch); 0 on a CPU-only machine. Creates no CUDA context."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return min(count, len(visible.split(","))) if visible else count
    except Exception:
        pass
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def _nvml_uuid(index_or_uuid: str) -> str | None:
    if not index_or_uuid.isdigit():
        return index_or_uuid
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(int(index_or_uuid)))
        finally:
            pynvml.nvmlShutdown()
        return uuid.decode() if isinstance(uuid, bytes) else uuid
    except Exception:
        return None


class SweepWorkerPlugin(WorkerPlugin):
    """Runs once in every worker process (and again in a restarted one)."""

    name = "sparsesweep"

    def __init__(self, *, dataset: str | None = None, data_dir: str | None = None, torch_threads: int | None = None,
                 warm_up: bool = True):
        self.dataset = dataset
        self.data_dir = data_dir
        self.torch_threads = torch_threads
        self.warm_up = warm_up

    def setup(self, worker) -> None:
        os.environ.update(WORKER_ENV)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        pinned = visible.split(",")[0] if visible else None
        info = {"pinned_gpu": pinned, "pinned_gpu_uuid": _nvml_uuid(pinned) if pinned else None,
                "host": socket.gethostname(), "pid": os.getpid()}
        worker.sparsesweep = info  # read by runner.execute_trial
        try:
            import torch

            if self.torch_threads:
                torch.set_num_threads(self.torch_threads)
            if self.warm_up:
                self._warm_up(torch)
        except Exception as exc:  # a failed warm-up must not kill the worker; the trial reports the real error
            log.warning("sparsesweep worker warm-up failed: %s", exc)

    def _warm_up(self, torch) -> None:
        if torch.cuda.is_available():
            try:
                from sparselayer import _cuda

                _cuda.ensure_loaded()  # builds/loads the CUDA extension once per worker process
            except (ImportError, AttributeError):
                pass
        if self.dataset:
            # The trainer keeps the data set on the device in a per-process cache; fill it before trial one.
            from sweep import trainer

            cached = getattr(trainer, "_cached_dataset", None)
            if cached is not None:
                cached(self.dataset, self.data_dir, str(trainer.resolve_device("auto")))


@dataclass
class ClusterInfo:
    kind: str  # "cuda", "cpu" or "external"
    n_workers: int
    dashboard: str | None


def _env_for_workers() -> None:
    # Set in the driver so that every process it spawns (nannies, workers) inherits them.
    for key, value in WORKER_ENV.items():
        os.environ[key] = value


@contextlib.contextmanager
def start_cluster(*, gpus: list[str] | None = None, scheduler: str | None = None, n_workers: int | None = None,
                  threads_per_worker: int = 1, host: str = "127.0.0.1", dashboard_address: str | None = None,
                  plugin: SweepWorkerPlugin | None = None, force_cpu: bool = False, timeout: float = 120,
                  quiet: bool = False, out=None):
    """Yield (Client, ClusterInfo). GPUs visible -> LocalCUDACluster, one worker per GPU; none -> LocalCluster of
    processes; `scheduler` -> connect to an existing cluster. Every operation has a timeout."""
    out = out or sys.stderr
    _env_for_workers()
    if dashboard_address is None:
        dashboard_address = f"{host}:0"
    cluster = None
    with dask.config.set(DASK_CONFIG):
        try:
            if scheduler:
                if gpus:
                    raise ClusterError("--gpus selects local GPUs; with --scheduler pick them when starting "
                                       "`dask cuda worker` (CUDA_VISIBLE_DEVICES) instead")
                try:
                    client = Client(scheduler, timeout=timeout)
                except (OSError, TimeoutError) as exc:
                    raise ClusterError(f"cannot reach the scheduler at {scheduler}: {exc}; start one with "
                                       "`dask scheduler` and workers with `dask cuda worker ADDRESS`") from exc
                kind = "external"
            else:
                n_gpus = 0 if force_cpu else visible_gpus()
                if gpus and n_gpus == 0:
                    raise ClusterError(f"--gpus {','.join(gpus)} asked for GPUs but none is visible")
                if n_gpus:
                    try:
                        from dask_cuda import LocalCUDACluster
                    except ImportError as exc:
                        raise ClusterError(f"GPUs are visible but dask-cuda cannot be imported ({exc}); "
                                           "install it with `pip install 'sparsesweep[gpu]'`") from exc
                    kwargs = {}
                    if gpus:
                        kwargs["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
                    cluster = LocalCUDACluster(
                        host=host, scheduler_port=0, dashboard_address=dashboard_address,
                        threads_per_worker=threads_per_worker, env=dict(WORKER_ENV), **kwargs)
                    kind = "cuda"
                else:
                    n_workers = n_workers or max(1, min(os.cpu_count() or 1, 4))
                    cluster = LocalCluster(
                        n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True, host=host,
                        scheduler_port=0, dashboard_address=dashboard_address, env=dict(WORKER_ENV))
                    kind = "cpu"
                client = Client(cluster, timeout=timeout)
            try:
                client.wait_for_workers(1, timeout=timeout)
                if plugin is not None:
                    client.register_plugin(plugin, name=SweepWorkerPlugin.name)
                n = len(client.scheduler_info(n_workers=-1)["workers"])
                info = ClusterInfo(kind, n, client.dashboard_link)
                if not quiet:
                    print(f"cluster: {kind}, {n} worker(s) x {threads_per_worker} thread(s); scheduler "
                          f"{client.scheduler.address}; dashboard {info.dashboard}", file=out, flush=True)
                yield client, info
            finally:
                with contextlib.suppress(Exception):
                    client.close(timeout=30)
        finally:
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close(timeout=60)
