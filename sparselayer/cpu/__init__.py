"""CPU implementations of the sparselayer ops, registered for the CPU dispatch key on import."""

import torch

from .. import _library  # noqa: F401  (the schemas must exist before implementations register)
from .sddmm import sddmm
from .spmm import spmm
from .spmm_t import spmm_t

__all__ = ["spmm", "spmm_t", "sddmm"]

torch.library.register_kernel("sparselayer::spmm", "cpu", spmm)
torch.library.register_kernel("sparselayer::spmm_t", "cpu", spmm_t)
torch.library.register_kernel("sparselayer::sddmm", "cpu", sddmm)
