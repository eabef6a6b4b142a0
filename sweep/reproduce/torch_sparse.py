"""The torch.sparse (cuSPARSE on CUDA) baseline of Table 3: the same CSR weights as a SparseMLP, run with
`torch.sparse.mm` and trained by a hand-written backward that rebuilds W^T as CSR every step (torch.sparse
keeps no transposed index, so every iteration pays the transpose), `sampled_addmm` for the weight gradient."""

from __future__ import annotations

import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class TorchSparseMLP:
    """ReLU hidden layers and a sigmoid output, every weight a torch.sparse_csr tensor."""

    def __init__(self, model: nn.Module, lr: float):
        self.lr = lr
        self.layers = []  # (crow, col, values, bias, (n_out, n_in))
        for module in model.modules():
            if hasattr(module, "crow_indices"):
                # int32 indices: what cuSPARSE works with natively (and enough for these layer sizes)
                self.layers.append((module.crow_indices.int(), module.col_indices.int(), module.values.detach().clone(),
                                    module.bias.detach().clone(), (module.out_features, module.in_features)))
            elif isinstance(module, nn.Linear):
                raise ValueError("the torch.sparse baseline needs every layer sparse (SparseLinear)")

    def _weight(self, i: int) -> torch.Tensor:
        crow, col, values, _, shape = self.layers[i]
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        activations = [x]
        last = len(self.layers) - 1
        for i, (_, _, _, bias, _) in enumerate(self.layers):
            z = torch.sparse.mm(self._weight(i), activations[-1].t()).t() + bias  # (batch, n_out)
            activations.append(torch.sigmoid(z) if i == last else torch.relu(z))
        return activations

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[-1].argmax(dim=1)

    @torch.no_grad()
    def train_step(self, x: torch.Tensor, target: torch.Tensor) -> None:
        """One SGD step on the summed squared error (the thesis's loss), `target` one-hot (batch, n_out)."""
        activations = self._forward(x)
        out = activations[-1]
        delta = 2.0 * (out - target) * out * (1.0 - out)  # (batch, n_out) d loss / d pre-activation
        for i in range(len(self.layers) - 1, -1, -1):
            crow, col, values, bias, shape = self.layers[i]
            weight = self._weight(i)
            grad_values = torch.sparse.sampled_addmm(weight, delta.t().contiguous(), activations[i], beta=0.0).values()
            grad_bias = delta.sum(dim=0)
            if i > 0:
                transposed = weight.t().to_sparse_csr()  # the per-step CSR transpose
                delta = torch.sparse.mm(transposed, delta.t()).t() * (activations[i] > 0)  # (batch, n_in)
            values.sub_(self.lr * grad_values)
            bias.sub_(self.lr * grad_bias)
