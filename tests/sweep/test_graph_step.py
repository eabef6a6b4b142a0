"""sweep.graph_step: training iterations replayed from a CUDA graph equal eager ones, across evolutions."""

import pytest
import torch
import torch.nn.functional as F

import sparselayer
from sparselayer.evolution import TopologyEvolver
from sweep.graph_step import GraphedTrainStep
from sweep.trainer import train

SMALL = {"dataset": "digits", "hidden": [64, 64], "batch_size": 128, "device": "cuda"}  # 1437 rows: 11 full + 29


def test_graphs_need_a_cuda_device():
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        GraphedTrainStep(model, F.mse_loss, optimizer, torch.device("cpu"))


def _mlp(seed: int) -> sparselayer.SparseMLP:
    generator = torch.Generator().manual_seed(seed)
    return sparselayer.SparseMLP([37, 53, 29, 10], sparsity=0.9, hidden_activation="relu", generator=generator).cuda()


def _batches(n: int, rows: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, 37, generator=generator).cuda(), torch.randint(0, 10, (rows,), generator=generator).cuda())
            for _ in range(n)]


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer_name", ["sgd", "momentum"])
def test_replayed_iterations_equal_eager_ones(optimizer_name):
    eager_model, graph_model = _mlp(0), _mlp(0)

    def make(model):
        momentum = 0.9 if optimizer_name == "momentum" else 0.0
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=momentum)

    eager_opt, graph_opt = make(eager_model), make(graph_model)
    step = GraphedTrainStep(graph_model, F.cross_entropy, graph_opt, torch.device("cuda"), warmup=2)
    batches = _batches(6, 48, seed=1) + _batches(1, 17, seed=2)  # six full batches, then a short one
    eager_losses, graph_losses = [], []
    with step.on_stream():
        for x, y in batches:
            graph_losses.append(step(x, y).clone())
    for x, y in batches:
        loss = F.cross_entropy(eager_model(x), y)
        eager_opt.zero_grad(set_to_none=True)
        loss.backward()
        eager_opt.step()
        eager_losses.append(loss.detach())
    assert step.captures == 1 and step.replays == 4  # 2 eager warm-ups, capture + 3 replays, the short batch eager
    torch.testing.assert_close(torch.stack(graph_losses), torch.stack(eager_losses), rtol=1e-6, atol=1e-6)
    for a, b in zip(graph_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_evolver_sees_the_last_replayed_batch_and_reset_captures_again():
    model = _mlp(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    evolver = TopologyEvolver(model, optimizer, ttp=0.05)
    step = GraphedTrainStep(model, F.cross_entropy, optimizer, torch.device("cuda"), warmup=1)
    batches = _batches(4, 32, seed=4)
    with step.on_stream():
        for x, y in batches:
            step(x, y)
    assert step.replays == 3
    first = model.sparse_layers()[0]
    torch.testing.assert_close(evolver._states[0].x, batches[-1][0])  # the graph's buffer holds the last batch
    nnz_before = [layer.nnz for layer in model.sparse_layers()]
    stats = evolver.step(1, 0.05)
    assert stats and first.nnz == nnz_before[0]
    step.reset()
    with step.on_stream():
        for x, y in batches:
            step(x, y)
    assert step.captures == 2
    assert torch.isfinite(first.values).all()


@pytest.mark.gpu
@pytest.mark.parametrize(
    "config",
    [
        {"sparsity": 0.9, "epochs": 4},  # the thesis's settings: SGD, MSE summed, gradient growth
        {"sparsity": 0.9, "epochs": 4, "optimizer": "momentum", "loss": "cross_entropy", "lr": 1e-3,
         "growth": "random", "ttp": 0.05, "regrow": 0.8},  # nnz shrinks at every evolution
        {"sparsity": [0.9, 0.9, None], "epochs": 4, "precision": "bf16"},  # autocast inside the capture
    ],
    ids=["thesis-sgd", "momentum-random-shrinking", "thesis-sgd-bf16"],
)
def test_graphed_training_equals_eager_training(config):
    graphed = train({**SMALL, **config, "cuda_graph": True})
    eager = train({**SMALL, **config, "cuda_graph": False})
    assert graphed["status"] == eager["status"] == "ok"
    torch.testing.assert_close(graphed["train_loss"], eager["train_loss"], rtol=1e-5, atol=1e-6)
    assert graphed["test_accuracy"] == pytest.approx(eager["test_accuracy"], abs=2 / 360)
    assert graphed["nnz"] == eager["nnz"]


@pytest.mark.gpu
def test_graphed_adam_trains_like_eager_adam():
    # capturable Adam orders its arithmetic differently: close, not bit-equal
    config = {**SMALL, "sparsity": 0.9, "epochs": 4, "loss": "cross_entropy", "loss_reduction": "mean",
              "optimizer": "adam", "lr": 1e-2, "ttp": 0.01, "prune_dead": True}
    graphed = train({**config, "cuda_graph": True})
    eager = train({**config, "cuda_graph": False})
    assert graphed["train_loss"][0] == pytest.approx(eager["train_loss"][0], rel=1e-3)
    assert graphed["final_test_accuracy"] == pytest.approx(eager["final_test_accuracy"], abs=0.03)
    assert graphed["final_test_accuracy"] > 0.5  # chance is 0.1


@pytest.mark.gpu
def test_no_capture_while_another_training_run_shares_the_process():
    from sweep.graph_step import active_gpu_trainings, gpu_training

    model = _mlp(5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    step = GraphedTrainStep(model, F.cross_entropy, optimizer, torch.device("cuda"), warmup=1)
    with gpu_training(), gpu_training():  # this run and another one
        assert active_gpu_trainings() == 2
        with step.on_stream():
            for x, y in _batches(3, 32, seed=6):
                step(x, y)
    assert step.captures == 0 and step.skipped_captures == 2
    with gpu_training():  # alone again: the next full batch captures
        with step.on_stream():
            for x, y in _batches(2, 32, seed=7):
                step(x, y)
    assert step.captures == 1 and active_gpu_trainings() == 0


@pytest.mark.gpu
@pytest.mark.timeout(240)
def test_concurrent_training_threads_finish_and_match_their_lone_runs():
    # a Dask worker with two trials per GPU runs them in two threads of one process
    import concurrent.futures

    configs = [{**SMALL, "sparsity": 0.9, "epochs": 3, "seed": seed} for seed in (0, 1)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(train, configs))
    alone = [train(c) for c in configs]
    for a, b in zip(together, alone):
        assert a["status"] == b["status"] == "ok"
        torch.testing.assert_close(a["train_loss"], b["train_loss"], rtol=1e-5, atol=1e-6)
