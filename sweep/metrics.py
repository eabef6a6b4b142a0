"""Size metrics of a (partly) sparse model: parameter and nonzero counts, bytes, overall sparsity."""

from __future__ import annotations

import torch
from torch import nn


def _is_sparse_layer(module: nn.Module) -> bool:
    return hasattr(module, "crow_indices") and hasattr(module, "values")


def model_size(model: nn.Module) -> dict:
    """n_params: trainable scalars; nnz: stored weights (sparse nonzeros + dense weight entries);
    param_bytes: bytes of every parameter and buffer (values, biases, CSR and CSC indices);
    overall_sparsity: 1 - nnz / the weight count of the same network fully dense."""
    nnz = 0
    dense_weights = 0
    for module in model.modules():
        if _is_sparse_layer(module):
            nnz += int(module.values.numel())
            dense_weights += int(module.in_features) * int(module.out_features)
        elif isinstance(module, nn.Linear):
            nnz += int(module.weight.numel())
            dense_weights += int(module.weight.numel())
    tensors = list(model.parameters()) + list(model.buffers())
    return {
        "n_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "nnz": nnz,
        "param_bytes": int(sum(t.numel() * t.element_size() for t in tensors)),
        "overall_sparsity": float(1.0 - nnz / dense_weights) if dense_weights else 0.0,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
