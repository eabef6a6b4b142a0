"""CSR helpers that stay on the tensors' device: validation, COO -> CSR, row indices and the CSC index.

Every function here is vectorised torch (sorts, index_add, cumsum): no Python loop over rows, and no dense
(n_out, n_in) tensor is ever created.
"""

from __future__ import annotations

import torch

__all__ = [
    "CSRError",
    "validate_csr",
    "row_indices",
    "coo_to_csr",
    "pointers",
    "transpose_index",
    "linear_keys",
]


class CSRError(ValueError):
    """A CSR (row pointers, column indices, values) triple that does not describe a valid matrix."""


def validate_csr(
    crow: torch.Tensor,
    col: torch.Tensor,
    shape: tuple[int, int],
    values: torch.Tensor | None = None,
) -> None:
    """Raise CSRError naming the problem if (crow, col[, values]) is not a valid (n_out, n_in) CSR matrix.

    Valid means: int64 1-D indices on one device, len(crow) == n_out + 1, crow[0] == 0, crow non-decreasing,
    crow[-1] == len(col) (== len(values)), 0 <= col < n_in, and columns strictly increasing within each row
    (sorted and unique). This syncs with the device once; call it on input from outside, not per step.
    """
    n_out, n_in = _check_shape(shape)
    for name, t in (("crow_indices", crow), ("col_indices", col)):
        if not isinstance(t, torch.Tensor):
            raise CSRError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int64:
            raise CSRError(f"{name} must be int64, got {t.dtype}; convert with .long()")
        if t.dim() != 1:
            raise CSRError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if crow.device != col.device:
        raise CSRError(f"crow_indices is on {crow.device} but col_indices on {col.device}; put both on one device")
    if crow.numel() != n_out + 1:
        raise CSRError(
            f"crow_indices has {crow.numel()} entries but a matrix with {n_out} rows needs n_out + 1 = {n_out + 1}"
        )
    nnz = col.numel()
    if values is not None:
        if not isinstance(values, torch.Tensor) or values.dim() != 1:
            raise CSRError("values must be a 1-D tensor (one entry per nonzero)")
        if not values.is_floating_point():
            raise CSRError(f"values must be floating point, got {values.dtype}")
        if values.numel() != nnz:
            raise CSRError(f"values has {values.numel()} entries but col_indices has {nnz}; they must match")
        if values.device != col.device:
            raise CSRError(f"values is on {values.device} but the indices on {col.device}; put all on one device")
    if int(crow[0]) != 0:
        raise CSRError(f"crow_indices[0] must be 0, got {int(crow[0])}")
    if int(crow[-1]) != nnz:
        raise CSRError(f"crow_indices[-1] must equal the number of nonzeros {nnz}, got {int(crow[-1])}")
    if n_out > 0 and bool((crow.diff() < 0).any()):
        raise CSRError("crow_indices must be non-decreasing (row pointers); found a decrease")
    if nnz == 0:
        return
    bad = (col < 0) | (col >= n_in)
    if bool(bad.any()):
        j = int(bad.nonzero()[0, 0])
        raise CSRError(f"col_indices out of range: col_indices[{j}] = {int(col[j])}, must be in [0, {n_in})")
    rows = row_indices(crow, nnz)
    same_row = rows[1:] == rows[:-1]
    not_increasing = same_row & (col[1:] <= col[:-1])
    if bool(not_increasing.any()):
        j = int(not_increasing.nonzero()[0, 0])
        what = "duplicate" if int(col[j]) == int(col[j + 1]) else "unsorted"
        raise CSRError(
            f"col_indices must be sorted and unique within each row; row {int(rows[j])} has {what} columns "
            f"{int(col[j])}, {int(col[j + 1])} (positions {j}, {j + 1}); sort each row or build it with coo_to_csr"
        )


def row_indices(crow: torch.Tensor, nnz: int | None = None) -> torch.Tensor:
    """The row of every nonzero, int64 (nnz,), in CSR order. Pass nnz to avoid a device sync."""
    n_out = crow.numel() - 1
    counts = crow.diff()  # (n_out,)
    rows = torch.arange(n_out, device=crow.device)
    if nnz is None:
        return torch.repeat_interleave(rows, counts)
    return torch.repeat_interleave(rows, counts, output_size=nnz)


def linear_keys(rows: torch.Tensor, cols: torch.Tensor, n_in: int) -> torch.Tensor:
    """row * n_in + col: one int64 key per position, ordered like CSR order (row-major)."""
    return rows * n_in + cols


def coo_to_csr(
    rows: torch.Tensor, cols: torch.Tensor, n_out: int, n_in: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort unique (row, col) pairs into CSR order on their device.

    Returns (crow (n_out + 1,), col (nnz,), order (nnz,)) where `order` is the permutation that takes the
    input positions to CSR order (so `values[order]` are the CSR values). Pairs must be unique.
    """
    keys = linear_keys(rows, cols, n_in)  # (nnz,)
    order = torch.argsort(keys)
    return pointers(rows, n_out), cols[order], order


def pointers(index: torch.Tensor, n: int) -> torch.Tensor:
    """Compressed pointers (n + 1,) for entries sorted by `index` (values in [0, n)): cumsum of the counts.

    Built with index_add into a fixed-size tensor rather than bincount, whose output length depends on the
    data, so the result has a static shape under torch.compile."""
    ptr = torch.zeros(n + 1, dtype=torch.int64, device=index.device)
    ptr.index_add_(0, index + 1, torch.ones_like(index))
    return torch.cumsum(ptr, 0)


def transpose_index(
    crow: torch.Tensor, col: torch.Tensor, n_in: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CSC index of W (= CSR of W^T): (ccol (n_in + 1,), row (nnz,), perm (nnz,)).

    A stable sort by column keeps rows ascending within each column, because CSR order is row-major.
    `perm[i]` is the CSR position of the i-th nonzero in CSC order, so W^T's values are `values[perm]`.
    """
    nnz = col.numel()
    perm = torch.argsort(col, stable=True)  # (nnz,)
    row = row_indices(crow, nnz)[perm]
    return pointers(col, n_in), row, perm


def _check_shape(shape) -> tuple[int, int]:
    try:
        n_out, n_in = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise CSRError(f"shape must be (out_features, in_features), got {shape!r}") from None
    if n_out < 0 or n_in < 0:
        raise CSRError(f"shape must be non-negative, got {shape!r}")
    return n_out, n_in
