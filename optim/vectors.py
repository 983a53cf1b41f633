"""Flat-vector views of parameter lists, for optimizers whose updates use inner products over all
parameters (conjugate gradient, BFGS, Barzilai-Borwein, the parabola step, line searches)."""

from __future__ import annotations

from typing import Sequence

import torch


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``tensors`` into one 1-D vector (a copy)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def flat_grad(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gradients of ``params`` as one vector; parameters without a gradient contribute zeros."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def assign_(params: Sequence[torch.Tensor], vector: torch.Tensor) -> None:
    """Copy the consecutive pieces of ``vector`` into ``params`` (in place, no autograd)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vector[offset:offset + n].view_as(p))
            offset += n


def add_(params: Sequence[torch.Tensor], vector: torch.Tensor, alpha: float = 1.0) -> None:
    """``params += alpha * vector`` piece by piece (in place, no autograd)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.add_(vector[offset:offset + n].view_as(p), alpha=alpha)
            offset += n

