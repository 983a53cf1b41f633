"""Models whose parameters are the point being optimised, for closed-form test functions."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class RosenbrockResiduals(nn.Module):
    """Residuals of the stochastic Rosenbrock function at the point ``uv = (u, v)``.

    For inputs eps (N, 1) it returns r = (1 - u, 10 sqrt(eps) (v - u^2)) per sample, so that
    sum(r^2) = (1 - u)^2 + 100 eps (v - u^2)^2 (CurveBall paper eq. 19). Trained with the
    ``sum_squares`` loss this is exactly the Rosenbrock objective, and Gauss-Newton methods see its
    least-squares structure. The start point is ``start`` or, by default, drawn from torch's
    generator uniformly in [-2, 2] x [-1, 3].
    """

    def __init__(self, start: Sequence[float] | None = None):
        super().__init__()
        if start is None:
            point = torch.rand(2) * 4.0 + torch.tensor([-2.0, -1.0])
        else:
            if len(start) != 2:
                raise ValueError("start must be [u, v]")
            point = torch.tensor([float(s) for s in start])
        self.uv = nn.Parameter(point)

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        u, v = self.uv[0], self.uv[1]
        eps = eps.reshape(eps.shape[0], -1)[:, 0]
        r1 = (1.0 - u).expand(eps.shape[0])
        r2 = 10.0 * torch.sqrt(eps) * (v - u * u)
        return torch.stack([r1, r2], dim=1)


def rosenbrock(input_shape: Sequence[int], num_outputs: int, start: Sequence[float] | None = None) -> nn.Module:
    """Point model for the ``rosenbrock`` data set (2 parameters, 2 residual outputs)."""
    if num_outputs != 2:
        raise ValueError("the rosenbrock model pairs with the rosenbrock data set (2 residuals)")
    return RosenbrockResiduals(start)


BEALE_CONSTANTS = (1.5, 2.25, 2.625)


class BealeResiduals(nn.Module):
    """Residuals sqrt(eps_i) (c_i - x + x y^i), i = 1..3, of the (noisy) Beale function at ``xy``.

    With the ``sum_squares`` loss this is B(x, y) = sum_i eps_i (c_i - x + x y^i)^2 (minimum 0 at
    (3, 0.5)). The default start is drawn uniformly in [-4.5, 4.5]^2, Beale's usual domain.
    """

    def __init__(self, start: Sequence[float] | None = None):
        super().__init__()
        if start is None:
            point = torch.rand(2) * 9.0 - 4.5
        else:
            if len(start) != 2:
                raise ValueError("start must be [x, y]")
            point = torch.tensor([float(s) for s in start])
        self.xy = nn.Parameter(point)

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        x, y = self.xy[0], self.xy[1]
        eps = eps.reshape(eps.shape[0], -1)[:, :3]
        terms = torch.stack([c - x + x * y ** (i + 1) for i, c in enumerate(BEALE_CONSTANTS)])
        return torch.sqrt(eps) * terms


def beale(input_shape: Sequence[int], num_outputs: int, start: Sequence[float] | None = None) -> nn.Module:
    """Point model for the ``beale`` data set (2 parameters, 3 residual outputs)."""
    if num_outputs != 3:
        raise ValueError("the beale model pairs with the beale data set (3 residuals)")
    return BealeResiduals(start)
