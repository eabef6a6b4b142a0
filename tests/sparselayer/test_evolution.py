"""TopologyEvolver: removal under tau, gradient/random growth, tau adaptation, CSR rebuild, optimizer remap."""

import math

import pytest
import torch

from sparselayer import SparseLinear, SparseMLP, TopologyEvolver
from sparselayer.csr import row_indices, validate_csr

from conftest import DEVICES, DTYPES
from csr_cases import random_csr


def _layer(device="cpu", dtype=torch.float64, n_out=7, n_in=96, nnz=333, n_small=20, tau=0.01, n_empty=2, seed=0):
    """A layer with two empty rows whose n_small random nonzeros are below tau and the rest above 0.1."""
    crow, col, values = random_csr(n_out, n_in, nnz, n_empty, dtype=dtype, device=device, seed=seed)
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(nnz, generator=g, dtype=torch.float64) * 0.9 + 0.1  # in [0.1, 1)
    magnitude[torch.randperm(nnz, generator=g)[:n_small]] = tau * torch.rand(n_small, generator=g, dtype=torch.float64)
    values = (magnitude * values.sign().cpu()).to(device=device, dtype=dtype)
    return SparseLinear.from_csr(crow, col, values, (n_out, n_in))


def _batch(layer, batch=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": layer.values.dtype}
    x = torch.randn(batch, layer.in_features, generator=g, dtype=torch.float64).to(layer.values.device, **kw)
    grad_y = torch.randn(batch, layer.out_features, generator=g, dtype=torch.float64).to(layer.values.device, **kw)
    return x, grad_y


def _entries(layer):
    """{(row, col): value} of a layer's nonzeros."""
    rows = row_indices(layer.crow_indices).tolist()
    return {(r, c): v for r, c, v in zip(rows, layer.col_indices.tolist(), layer.values.tolist())}


def _check_csr(layer):
    validate_csr(layer.crow_indices, layer.col_indices, (layer.out_features, layer.in_features), layer.values)
    ccol, row, perm = layer.csc_col_ptr, layer.csc_row, layer.csc_perm
    validate_csr(ccol, row, (layer.in_features, layer.out_features), layer.values[perm])
    rows_t = row_indices(ccol)  # the CSC index must describe the same matrix
    assert torch.equal(layer.col_indices[perm], rows_t) and torch.equal(row_indices(layer.crow_indices)[perm], row)


@pytest.mark.parametrize("k", [None, 3, 7])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_gradient_step_removes_under_tau_and_inserts_the_largest_gradients(device, dtype, k):
    layer = _layer(device, dtype)
    before = _entries(layer)
    evolver = TopologyEvolver(layer, tau=0.01, ttp=0.001, k=k)
    x, grad_y = _batch(layer)
    evolver.observe(layer, x, grad_y)
    lr = 0.05
    (stats,) = evolver.step(1, lr)
    _check_csr(layer)

    survivors = {pos: v for pos, v in before.items() if abs(v) >= 0.01}
    assert stats["thresholded"] == stats["removed"] == 20 and stats["grown"] == 20
    assert layer.nnz == 333 and stats["nnz"] == 333
    after = _entries(layer)
    assert {p: after[p] for p in survivors} == survivors  # kept weights keep their values
    grown = {p: v for p, v in after.items() if p not in survivors}
    assert not set(grown) & set(before)  # new connections were not connections before

    # Reference: the dense gradient of the k highest-cost neurons, minus existing connections.
    k_used = k or math.ceil(math.sqrt(20))
    assert stats["k"] == k_used
    dense_grad = grad_y.double().T @ x.double()  # (n_out, n_in), test reference only
    top = torch.topk(grad_y.double().abs().sum(0), k_used).indices.tolist()
    candidates = [((r, c), dense_grad[r, c].item()) for r in top for c in range(96) if (r, c) not in before]
    expected = dict(sorted(candidates, key=lambda rc: -abs(rc[1]))[:20])
    assert set(grown) == set(expected)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for pos, g in expected.items():
        assert grown[pos] == pytest.approx(-lr * g, rel=tol, abs=tol)


def test_full_gradient_k_picks_the_global_top_non_connections():
    layer = _layer()
    before = _entries(layer)
    evolver = TopologyEvolver(layer, k=layer.out_features)
    x, grad_y = _batch(layer)
    evolver.observe(layer, x, grad_y)
    evolver.step(1, 1.0)
    dense_grad = grad_y.T @ x
    free = [((r, c), dense_grad[r, c].item()) for r in range(7) for c in range(96) if (r, c) not in before]
    expected = {p for p, _ in sorted(free, key=lambda rc: -abs(rc[1]))[:20]}
    assert set(_entries(layer)) - set(before) == expected


@pytest.mark.parametrize("n_small, direction", [(20, "down"), (0, "up")])
def test_tau_moves_toward_the_target_fraction(n_small, direction):
    layer = _layer(n_small=n_small)
    evolver = TopologyEvolver(layer, growth="random", ttp=0.01, tau=0.01, tau_factor=1.25)
    (stats,) = evolver.step(1, 0.1)
    assert stats["removed_fraction"] == pytest.approx(n_small / 333)
    expected = 0.01 / 1.25 if direction == "down" else 0.01 * 1.25  # 20/333 = 6% > 1%; 0% < 1%
    assert stats["tau"] == 0.01 and stats["next_tau"] == pytest.approx(expected) == evolver.taus[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_random_growth_adds_distinct_free_zero_weights(device, dtype):
    layer = _layer(device, dtype)
    before = _entries(layer)
    evolver = TopologyEvolver(layer, growth="random", generator=torch.Generator().manual_seed(0))
    (stats,) = evolver.step(1, 0.1)
    _check_csr(layer)
    after = _entries(layer)
    grown = set(after) - set(before)
    assert layer.nnz == 333 and stats["grown"] == len(grown) == 20
    assert all(after[p] == 0.0 for p in grown)


def test_random_growth_in_a_nearly_full_layer():
    # 4 x 6 = 24 positions, 16 used, 8 below tau: 8 free positions must all be taken (enumeration path).
    layer = _layer(n_out=4, n_in=6, nnz=16, n_small=8, n_empty=0)
    free_before = {(r, c) for r in range(4) for c in range(6)} - set(_entries(layer))
    TopologyEvolver(layer, growth="random").step(1, 0.1)
    _check_csr(layer)
    assert layer.nnz == 16 and free_before <= set(_entries(layer))


@pytest.mark.parametrize("regrow, nnz", [(0.0, 313), (0.5, 323), (2.0, 353)])
def test_regrow_ratio_shrinks_or_grows_nnz(regrow, nnz):
    layer = _layer()
    evolver = TopologyEvolver(layer, growth="random", regrow=regrow)
    (stats,) = evolver.step(1, 0.1)
    assert layer.nnz == nnz == stats["nnz"] and stats["grown"] == nnz - 313
    _check_csr(layer)


def test_growth_none_keeps_the_topology():
    layer = _layer()
    before = _entries(layer)
    (stats,) = TopologyEvolver(layer, growth="none").step(1, 0.1)
    assert _entries(layer) == before and stats["removed"] == stats["grown"] == 0


def test_prune_dead_removes_every_weight_of_a_zero_cost_neuron():
    layer = _layer(n_small=0)
    evolver = TopologyEvolver(layer, growth="random", prune_dead=True)
    x, grad_y = _batch(layer)
    dead_row = int(layer.crow_indices.diff().argmax())
    grad_y[:, dead_row] = 0.0
    evolver.observe(layer, x, grad_y)
    (stats,) = evolver.step(1, 0.1)
    n_dead = stats["dead_removed"]
    assert n_dead > 0 and stats["thresholded"] == 0 and stats["removed"] == n_dead == stats["grown"]
    old_dead = {p for p in _entries(_layer(n_small=0)) if p[0] == dead_row}  # the same layer, unevolved
    assert len(old_dead) == n_dead and not old_dead & set(_entries(layer))  # all of them are gone


@pytest.mark.parametrize(
    "optimizer, keys",
    [
        (lambda p: torch.optim.SGD(p, lr=1e-6, momentum=0.9), ["momentum_buffer"]),
        (lambda p: torch.optim.Adam(p, lr=1e-6), ["exp_avg", "exp_avg_sq"]),
    ],
    ids=["momentum", "adam"],
)
def test_optimizer_state_follows_its_weight(optimizer, keys):
    layer = _layer()
    opt = optimizer(layer.parameters())
    evolver = TopologyEvolver(layer, opt)
    x = torch.randn(5, 96, dtype=torch.float64)
    layer(x).square().sum().backward()  # the hooks record this batch
    opt.step()
    before = _entries(layer)
    old_state = {key: dict(zip(before, opt.state[layer.values][key].tolist())) for key in keys}
    step_before = opt.state[layer.values].get("step")
    step_before = None if step_before is None else step_before.clone()
    param = layer.values
    (stats,) = evolver.step(1, 0.1)
    assert layer.values is param and layer.values.grad is None and stats["grown"] > 0
    after = list(_entries(layer))
    for key in keys:
        remapped = opt.state[layer.values][key]
        assert remapped.shape == (layer.nnz,)
        for pos, v in zip(after, remapped.tolist()):
            assert v == (old_state[key][pos] if pos in before else 0.0)
    if step_before is not None:
        assert torch.equal(opt.state[layer.values]["step"], step_before)
    layer(x).square().sum().backward()  # training goes on with the new topology
    opt.step()


def test_hooks_record_the_last_training_batch_and_its_output_gradient():
    model = SparseMLP([12, 8, 3], 0.5, dtype=torch.float64)
    evolver = TopologyEvolver(model)
    first, last = model.layers
    captured = {}

    def capture(module, inputs, output):
        if output.requires_grad and "g" not in captured:
            output.register_hook(lambda g: captured.update(g=g))

    first.register_forward_hook(capture)
    x = torch.randn(4, 12, dtype=torch.float64)
    model(x).sum().backward()
    state = evolver._states[0]
    assert torch.equal(state.x, x) and torch.equal(state.grad_y, captured["g"])
    with torch.no_grad():  # evaluation does not overwrite the observation
        model(torch.randn(4, 12, dtype=torch.float64))
    model.eval()
    model(torch.randn(4, 12, dtype=torch.float64)).sum().backward()
    assert torch.equal(evolver._states[0].x, x)
    assert evolver._states[1].x.shape == (4, 8) and evolver._states[1].grad_y.shape == (4, 3)
    evolver.remove_hooks()
    model.train()
    model(torch.randn(2, 12, dtype=torch.float64)).sum().backward()
    assert evolver._states[0].x.shape[0] == 4


def test_step_follows_evolve_every_and_needs_an_observation():
    layer = _layer()
    evolver = TopologyEvolver(layer, evolve_every=2)
    assert evolver.step(1, 0.1) == []
    with pytest.raises(RuntimeError, match="no training batch observed for layer 0"):
        evolver.step(2, 0.1)
    evolver.observe(0, *_batch(layer))
    assert len(evolver.step(2, 0.1)) == 1
    with pytest.raises(ValueError, match="epoch counts completed epochs and starts at 1"):
        evolver.step(0, 0.1)
    with pytest.raises(RuntimeError, match="no training batch observed"):  # observations are used once
        evolver.step(4, 0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"growth": "set"}, "growth must be one of"),
        ({"ttp": 0.0}, "ttp"),
        ({"tau": -1.0}, "tau must be a positive number"),
        ({"tau_factor": 0.9}, "tau_factor must be > 1"),
        ({"k": 0}, "k must be a positive int"),
        ({"regrow": -0.5}, "regrow must be a number >= 0"),
        ({"evolve_every": 0}, "evolve_every must be a positive int"),
        ({"growth": "none", "prune_dead": True}, "prune_dead changes the topology"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TopologyEvolver(_layer(), **kwargs)


def test_a_model_without_sparse_layers_is_rejected():
    with pytest.raises(ValueError, match="no SparseLinear layer"):
        TopologyEvolver(SparseMLP([4, 3], None))
    with pytest.raises(TypeError, match="SparseLinear layers only"):
        TopologyEvolver([torch.nn.Linear(2, 2)])


def test_evolving_a_huge_layer_never_goes_dense():
    # A dense 200k x 200k gradient would need 160 GB; only k rows of it are computed.
    layer = SparseLinear(200_000, 200_000, 0.99998, generator=torch.Generator().manual_seed(0))
    evolver = TopologyEvolver(layer)
    x = torch.randn(2, 200_000)
    layer(x).sum().backward()
    (stats,) = evolver.step(1, 0.001)
    assert stats["removed"] > 0 and stats["grown"] == stats["removed"] and layer.nnz == 800_000
    assert stats["k"] == math.ceil(math.sqrt(stats["removed"]))


@pytest.mark.gpu
def test_evolution_stays_on_the_gpu():
    layer = _layer("cuda", torch.float32)
    evolver = TopologyEvolver(layer)
    layer(torch.randn(5, 96, device="cuda")).square().sum().backward()
    evolver.step(1, 0.1)
    _check_csr(layer)
    assert layer.col_indices.is_cuda and layer.csc_perm.is_cuda and layer.nnz == 333
