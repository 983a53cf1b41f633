"""The exact diagonal of an operator from products with unit vectors (small models, reference values)."""
from __future__ import annotations

import torch

from .operators.base import LinearOperator


def exact_diagonal(op: LinearOperator, chunk: int = 64) -> torch.Tensor:
    """diag(A) from n products with unit vectors (small models, reference values)."""
    n = op.shape[0]
    out = torch.empty(n, dtype=torch.float64, device=op.device)
    for i in range(0, n, chunk):
        j = min(n, i + chunk)
        E = torch.zeros(n, j - i, dtype=op.dtype, device=op.device)
        E[torch.arange(i, j), torch.arange(j - i)] = 1
        out[i:j] = op.matmat(E)[torch.arange(i, j), torch.arange(j - i)].to(torch.float64)
    return out
