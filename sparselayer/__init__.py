"""sparselayer: truly sparse (CSR) linear layers for PyTorch, trained from scratch with an evolving topology.

Importing the package declares the `sparselayer::*` ops and registers their CPU kernels; the CUDA kernels
are built and loaded on first use on a CUDA tensor (`sparselayer._cuda.ensure_loaded`).
"""

from . import _library  # noqa: F401  (op schemas)
from . import cpu  # noqa: F401  (CPU kernels)
from . import ops
from .csr import CSRError, coo_to_csr, transpose_index, validate_csr
from .evolution import TopologyEvolver
from .init import init_std, sparse_topology, weights_per_row
from .layer import SparseLinear
from .mlp import SparseMLP

__all__ = [
    "SparseLinear",
    "SparseMLP",
    "TopologyEvolver",
    "ops",
    "CSRError",
    "validate_csr",
    "coo_to_csr",
    "transpose_index",
    "sparse_topology",
    "init_std",
    "weights_per_row",
]
