"""Thesis 3.2.4-3.2.5: evolve each SparseLinear's topology every few epochs, entirely on its device.

One evolution step of a layer with weights w (CSR), threshold tau, last batch input x (batch, n_in) and
backpropagated cost grad_y = dLoss/d(pre-activation) (batch, n_out):

1. Remove: every weight with |w| < tau. With `prune_dead`, also every weight of a neuron whose cost
   sum_b |grad_y[b, r]| is exactly zero on the observed batch (the "lost" weights of thesis figure 11:
   nothing downstream listens to that neuron, so its weights never shrink below tau).
2. Adapt tau for the next step (per layer). With f = tau_factor > 1 and the thresholded fraction
   p = (#|w| < tau) / nnz:  p > ttp -> tau /= f;  p < ttp -> tau *= f;  p == ttp -> unchanged.
   Near zero the weight density is roughly flat, so p is about proportional to tau and one step changes
   p by at most the factor f: the default f = 1.1 moves p by <= 10% per evolution (no sudden blow-up,
   which the thesis warns about) while still covering a factor 2.6 in tau per 10 evolutions.
   The default tau = 0.01 is the thesis's.
3. Grow N_g = round(regrow * #removed) new connections (regrow = 1 keeps nnz constant), never at a
   position that was a connection before this step (so a weight just removed is not re-grown at once):
   - "gradient" (thesis): rank neurons by their cost sum_b |grad_y[b, r]|, take the k highest
     (k = ceil(sqrt(N_g)) by default, thesis eq. 1), compute only those k gradient rows
     G = grad_y[:, rows]^T @ x  (k, n_in)  (batch-summed, as the training loss defines it), and insert the
     N_g largest |G| entries that are not connections (torch.topk, no full sort) with w = -lr * G.
     If those k rows have fewer free positions than N_g, fewer are grown (the stats say so).
   - "random" (SET, as the thesis describes it): N_g uniformly random free positions, w = 0.
   - "none": the topology is static; nothing is removed or grown.
4. Rebuild the CSR on the layer's device (mask, concatenate, sort by (row, col), row pointers by
   index_add/cumsum) and remap the optimizer state: per-weight state tensors of shape (nnz,) (momentum,
   exp_avg, exp_avg_sq, ...) follow their weight, new weights start at zero; step counters are untouched.
   The `values` Parameter stays the same object (its .data is swapped) and its .grad is cleared.

The evolver captures x and grad_y with hooks on every SparseLinear (the last training batch that ran
forward and backward in train mode with grad enabled); `observe` records them by hand instead. In
bf16-activation mode (see `sparselayer.layer`) they may be bfloat16; growth computes in the values' dtype.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .csr import coo_to_csr, linear_keys, row_indices
from .layer import SparseLinear

__all__ = ["TopologyEvolver", "GROWTH_MODES"]

GROWTH_MODES = ("gradient", "random", "none")


@dataclass
class _LayerState:
    tau: float
    x: torch.Tensor | None = None  # (batch, n_in), the last observed training batch's input
    grad_y: torch.Tensor | None = None  # (batch, n_out), its backpropagated cost
    handles: list = field(default_factory=list)


class TopologyEvolver:
    """Evolves the topology of every SparseLinear in `model_or_layers` (see the module docstring).

    Use: build it after the model and optimizer, train as usual, and call `step(epoch, lr)` after each
    epoch; it evolves when `epoch % evolve_every == 0` and returns one stats dict per layer (else []).
    """

    def __init__(
        self,
        model_or_layers: nn.Module | Iterable[SparseLinear],
        optimizer: torch.optim.Optimizer | None = None,
        growth: str = "gradient",
        ttp: float = 0.001,
        tau: float = 0.01,
        tau_factor: float = 1.1,
        k: int | None = None,
        regrow: float = 1.0,
        prune_dead: bool = False,
        evolve_every: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(model_or_layers, SparseLinear):
            layers = [model_or_layers]
        elif isinstance(model_or_layers, nn.Module):
            layers = [m for m in model_or_layers.modules() if isinstance(m, SparseLinear)]
        else:
            layers = list(model_or_layers)
            bad = [type(m).__name__ for m in layers if not isinstance(m, SparseLinear)]
            if bad:
                raise TypeError(f"TopologyEvolver evolves SparseLinear layers only; got {bad}")
        if not layers:
            raise ValueError("no SparseLinear layer to evolve: the model has none (all dense?); drop the evolver")
        if growth not in GROWTH_MODES:
            raise ValueError(f"growth must be one of {GROWTH_MODES}, got {growth!r}")
        _check_positive("tau", tau)
        if not 0.0 < float(ttp) < 1.0:
            raise ValueError(f"ttp (target threshold percentage, a fraction) must be in (0, 1), got {ttp!r}; the thesis uses 0.001")
        if not float(tau_factor) > 1.0:
            raise ValueError(f"tau_factor must be > 1 (tau is multiplied or divided by it), got {tau_factor!r}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
            raise ValueError(f"k must be a positive int or None (None: ceil(sqrt(#grown))), got {k!r}")
        if isinstance(regrow, bool) or not isinstance(regrow, (int, float)) or not regrow >= 0:
            raise ValueError(f"regrow must be a number >= 0 (1 keeps nnz constant), got {regrow!r}")
        if isinstance(evolve_every, bool) or not isinstance(evolve_every, int) or evolve_every <= 0:
            raise ValueError(f"evolve_every must be a positive int (epochs), got {evolve_every!r}")
        if prune_dead and growth == "none":
            raise ValueError("prune_dead changes the topology; it needs growth='gradient' or 'random', not 'none'")
        self.layers: list[SparseLinear] = layers
        self.optimizer = optimizer
        self.growth = growth
        self.ttp = float(ttp)
        self.tau_factor = float(tau_factor)
        self.k = k
        self.regrow = float(regrow)
        self.prune_dead = bool(prune_dead)
        self.evolve_every = evolve_every
        self.generator = generator
        self._states = [_LayerState(tau=float(tau)) for _ in layers]
        if growth == "gradient" or prune_dead:
            for i, layer in enumerate(layers):
                self._states[i].handles.append(layer.register_forward_hook(self._make_forward_hook(i)))

    # ------------------------------------------------------------------------------------------------
    # Observation

    def _make_forward_hook(self, index: int):
        def hook(module: SparseLinear, inputs, output):
            if not (module.training and torch.is_grad_enabled() and output.requires_grad):
                return
            x = inputs[0].detach().reshape(-1, module.in_features)  # (batch, n_in)

            def record_grad(grad_y: torch.Tensor) -> None:
                self.observe(index, x, grad_y)

            output.register_hook(record_grad)

        return hook

    def observe(self, layer: SparseLinear | int, x: torch.Tensor, grad_y: torch.Tensor) -> None:
        """Record a batch's input x (..., n_in) and cost grad_y (..., n_out) for a layer (object or index)."""
        index = layer if isinstance(layer, int) else self._index_of(layer)
        module = self.layers[index]
        x = x.detach().reshape(-1, module.in_features)
        grad_y = grad_y.detach().reshape(-1, module.out_features)
        if x.shape[0] != grad_y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but grad_y has {grad_y.shape[0]}; they must be one batch")
        self._states[index].x, self._states[index].grad_y = x, grad_y

    def remove_hooks(self) -> None:
        for state in self._states:
            for handle in state.handles:
                handle.remove()
            state.handles.clear()

    @property
    def taus(self) -> list[float]:
        return [s.tau for s in self._states]

    def state_dict(self) -> dict:
        return {"tau": self.taus}

    def load_state_dict(self, state: dict) -> None:
        taus = state.get("tau")
        if not isinstance(taus, list) or len(taus) != len(self._states):
            raise ValueError(f"expected {{'tau': [one float per layer ({len(self._states)})]}}, got {state!r}")
        for s, tau in zip(self._states, taus):
            s.tau = float(tau)

    # ------------------------------------------------------------------------------------------------
    # Evolution

    def step(self, epoch: int, lr: float) -> list[dict]:
        """Evolve every layer if `epoch` (epochs completed, from 1) is a multiple of evolve_every.

        lr is the learning rate of the weights, used for the new weights w = -lr * grad. Returns one stats
        dict per layer (layer, removed, thresholded, dead_removed, grown, nnz, removed_fraction, tau,
        next_tau, k) when it evolved, else [].
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch counts completed epochs and starts at 1, got {epoch!r}")
        if epoch % self.evolve_every != 0:
            return []
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        return [self.evolve_layer(i, lr) for i in range(len(self.layers))]

    @torch.no_grad()
    def evolve_layer(self, index: int, lr: float) -> dict:
        """One evolution step of layer `index` now, regardless of the epoch."""
        layer, state = self.layers[index], self._states[index]
        stats = {"layer": index, "removed": 0, "thresholded": 0, "dead_removed": 0, "grown": 0,
                 "nnz": layer.nnz, "removed_fraction": 0.0, "tau": state.tau, "next_tau": state.tau, "k": None}
        if self.growth == "none":
            return stats
        if (self.growth == "gradient" or self.prune_dead) and state.grad_y is None:
            raise RuntimeError(
                f"no training batch observed for layer {index} since its last evolution: run forward and backward "
                "in train mode (grad enabled) after creating the evolver, or call evolver.observe(layer, x, grad_y)"
            )
        n_out, n_in = layer.out_features, layer.in_features
        values, col = layer.values.detach(), layer.col_indices
        nnz = values.numel()
        rows = row_indices(layer.crow_indices, nnz)  # (nnz,)

        # 1. remove
        small = values.abs() < state.tau  # (nnz,)
        keep = ~small
        if self.prune_dead:
            dead_row = state.grad_y.abs().sum(0) == 0  # (n_out,)
            keep &= ~dead_row[rows]
        n_small = int(small.sum())
        n_kept = int(keep.sum())
        n_removed = nnz - n_kept

        # 2. adapt tau
        fraction = n_small / nnz if nnz else 0.0
        if fraction > self.ttp:
            state.tau /= self.tau_factor
        elif fraction < self.ttp:
            state.tau *= self.tau_factor

        # 3. grow
        n_grow = min(round(self.regrow * n_removed), n_out * n_in - nnz)
        k = None
        if n_grow <= 0:
            new_rows = new_cols = rows.new_zeros(0)
            new_values = values.new_zeros(0)
        elif self.growth == "gradient":
            k = min(self.k or math.ceil(math.sqrt(n_grow)), n_out)
            new_rows, new_cols, new_values = _gradient_growth(
                state.x, state.grad_y, rows, col, n_grow, k, lr, values.dtype
            )
        else:
            new_rows, new_cols = _random_growth(rows, col, n_out, n_in, n_grow, self.generator)
            new_values = values.new_zeros(new_rows.numel())

        # 4. rebuild the CSR and remap the optimizer state
        kept = keep.nonzero().squeeze(1)  # (n_kept,) old CSR positions, ascending
        source = torch.cat([kept, kept.new_full((new_rows.numel(),), -1)])  # old position or -1 (new)
        crow, new_col, order = coo_to_csr(torch.cat([rows[kept], new_rows]), torch.cat([col[kept], new_cols]), n_out, n_in)
        new_vals = torch.cat([values[kept], new_values])[order]
        source = source[order]
        self._remap_optimizer_state(layer.values, source, nnz)
        layer.set_topology(crow, new_col, new_vals, validate=False)
        layer.values.grad = None
        state.x = state.grad_y = None

        stats.update(removed=n_removed, thresholded=n_small, dead_removed=n_removed - n_small,
                     grown=int(new_rows.numel()), nnz=layer.nnz, removed_fraction=fraction,
                     next_tau=state.tau, k=k)
        return stats

    def _remap_optimizer_state(self, param: nn.Parameter, source: torch.Tensor, old_nnz: int) -> None:
        if self.optimizer is None or param not in self.optimizer.state:
            return
        is_old = source >= 0
        state = self.optimizer.state[param]
        for key, t in list(state.items()):
            if isinstance(t, torch.Tensor) and t.shape == (old_nnz,):
                new = t.new_zeros(source.shape)
                new[is_old] = t[source[is_old]]
                state[key] = new

    def _index_of(self, layer: SparseLinear) -> int:
        for i, m in enumerate(self.layers):
            if m is layer:
                return i
        raise ValueError("that layer is not one this evolver evolves")


def _gradient_growth(x, grad_y, rows, col, n_grow: int, k: int, lr: float, dtype: torch.dtype):
    """The n_grow largest |dLoss/dW| non-connections among the k highest-cost neurons, w = -lr * grad.

    x and grad_y may be bfloat16 (bf16-activation mode; under autocast x is the layer's float32 input): the
    cost and the gradient rows are computed in the values' `dtype`, which the new weights must have."""
    n_out, n_in = grad_y.shape[1], x.shape[1]
    cost = grad_y.abs().sum(0, dtype=dtype)  # (n_out,), a bf16 sum would tie neurons that differ
    top = torch.topk(cost, k).indices  # (k,)
    with torch.autocast(x.device.type, enabled=False):  # an enclosing bf16 autocast would round the product
        grad = grad_y[:, top].T.to(dtype) @ x.to(dtype)  # (k, n_in): only these k rows of the dense gradient
    slot = torch.full((n_out,), -1, dtype=torch.int64, device=rows.device)
    slot[top] = torch.arange(k, device=rows.device)
    s = slot[rows]  # (nnz,) which of the k rows each existing connection sits in, or -1
    hit = s >= 0
    score = grad.abs()
    score[s[hit], col[hit]] = -1.0  # existing connections can never win (|grad| >= 0)
    n_grow = min(n_grow, k * n_in - int(hit.sum()))
    picked = torch.topk(score.reshape(-1), n_grow).indices  # (n_grow,)
    return top[picked // n_in], picked % n_in, -lr * grad.reshape(-1)[picked]


def _random_growth(rows, col, n_out: int, n_in: int, n_grow: int, generator, attempts: int = 8):
    """n_grow distinct uniformly random positions that are not connections (rejection sampling on keys)."""
    device = rows.device
    total = n_out * n_in
    existing = linear_keys(rows, col, n_in)  # (nnz,), ascending because CSR order is row-major
    free = total - existing.numel()
    gen_device = generator.device if generator is not None else device
    chosen = existing.new_zeros(0)
    if free > 4 * n_grow:  # sparse enough that uniform draws mostly hit free positions
        for _ in range(attempts):
            need = n_grow - chosen.numel()
            if need <= 0:
                break
            m = math.ceil(need * total / free * 1.25) + 16
            draws = torch.randint(total, (m,), generator=generator, device=gen_device).to(device)
            chosen = torch.unique(torch.cat([chosen, draws[~_isin_sorted(draws, existing)]]))
    if chosen.numel() < n_grow:  # nearly dense layer: enumerate the free positions instead
        is_free = torch.ones(total, dtype=torch.bool, device=device)
        is_free[existing] = False
        chosen = is_free.nonzero().squeeze(1)
    pick = torch.randperm(chosen.numel(), generator=generator, device=gen_device)[:n_grow].to(device)
    keys = chosen[pick]
    return keys // n_in, keys % n_in


def _isin_sorted(values: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    """values[i] in sorted_keys, by binary search."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, values).clamp_max_(sorted_keys.numel() - 1)
    return sorted_keys[pos] == values


def _check_positive(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive number, got {v!r}")
