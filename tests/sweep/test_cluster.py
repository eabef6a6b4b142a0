"""sweep.cluster on a CPU-only machine: a real LocalCluster of processes, and connecting to an existing scheduler."""

from __future__ import annotations

import os

import pytest
from distributed import LocalCluster

from sweep.cluster import WORKER_ENV, ClusterError, SweepWorkerPlugin, parse_gpus, start_cluster, visible_gpus

TIMEOUT = 60


@pytest.mark.parametrize("text,expected", [("0", ["0"]), ("0,2", ["0", "2"]), (" 1 , 3 ", ["1", "3"]),
                                           ("GPU-abc,1", ["GPU-abc", "1"]), (None, None)])
def test_parse_gpus(text, expected):
    assert parse_gpus(text) == expected


@pytest.mark.parametrize("text", ["", "a", "0,0", "0;1"])
def test_parse_gpus_rejects(text):
    with pytest.raises(ValueError, match="--gpus"):
        parse_gpus(text)


@pytest.mark.timeout(120)
def test_local_cluster_of_processes_with_plugin(capsys):
    plugin = SweepWorkerPlugin(dataset="digits", torch_threads=1)
    with start_cluster(n_workers=2, threads_per_worker=2, plugin=plugin, force_cpu=True,
                       timeout=TIMEOUT) as (client, info):
        assert info.kind == "cpu" and info.n_workers == 2
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2 and all(w["nthreads"] == 2 for w in workers.values())
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert info.dashboard.startswith("http://127.0.0.1:")
        # separate processes, each with the multicast switches and the plugin's record
        pids = client.run(os.getpid)
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        envs = client.run(lambda: {k: os.environ.get(k) for k in WORKER_ENV})
        assert all(env == WORKER_ENV for env in envs.values())
        records = client.run(lambda dask_worker: dask_worker.sparsesweep)
        assert all(r["pid"] == pids[a] and r["pinned_gpu"] is None for a, r in records.items())
        threads = client.run(lambda: __import__("torch").get_num_threads())
        assert set(threads.values()) == {1}
        # the data set was loaded into the trainer's per-process cache by the plugin
        cached = client.run(lambda: __import__("sweep.trainer").trainer._cached_dataset.cache_info().currsize)
        assert set(cached.values()) == {1}
    assert f"dashboard {info.dashboard}" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_existing_scheduler():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
                      dashboard_address=":0") as cluster:
        with start_cluster(scheduler=cluster.scheduler_address, timeout=TIMEOUT, quiet=True) as (client, info):
            assert info.kind == "external" and info.n_workers == 1
            assert client.submit(lambda x: x + 1, 1).result(timeout=TIMEOUT) == 2
        assert len(cluster.scheduler_info["workers"]) == 1  # the external cluster outlives the sweep


@pytest.mark.timeout(60)
def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ClusterError, match="cannot reach the scheduler"):
        with start_cluster(scheduler="tcp://127.0.0.1:1", timeout=2, quiet=True):
            pass


def test_gpus_without_gpus_is_a_clear_error():
    if visible_gpus():
        pytest.skip("this machine has GPUs")
    with pytest.raises(ClusterError, match="none is visible"):
        with start_cluster(gpus=["0"], quiet=True):
            pass


@pytest.mark.gpu
@pytest.mark.timeout(600)
def test_cuda_cluster_pins_one_worker_per_gpu_and_trials_run_there(tmp_path):
    pytest.importorskip("dask_cuda")
    from platform_helpers import trials_of

    from sweep.config import load_sweeps
    from sweep.runner import run_sweep

    n_gpus = visible_gpus()
    spec = load_sweeps().get("quickstart").replace(n_trials=2 * n_gpus, pruner=None)
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    with start_cluster(plugin=SweepWorkerPlugin(dataset="digits"), timeout=TIMEOUT, quiet=True) as (client, info):
        assert info.kind == "cuda" and info.n_workers == n_gpus
        envs = client.run(lambda: {k: os.environ.get(k) for k in [*WORKER_ENV, "CUDA_VISIBLE_DEVICES"]})
        assert sorted(e["CUDA_VISIBLE_DEVICES"].split(",")[0] for e in envs.values()) == [str(i) for i in range(n_gpus)]
        assert all(all(e[k] == v for k, v in WORKER_ENV.items()) for e in envs.values())
        run_sweep(spec, client, url)
    trials = trials_of(url, "quickstart")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert complete, [t.user_attrs.get("fail_reason") for t in trials]
    for t in complete:
        assert t.user_attrs["device"].startswith("cuda")
        assert t.user_attrs["gpu_uuid"] == t.user_attrs["pinned_gpu_uuid"]
