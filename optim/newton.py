"""Newton's method with a modified Hessian, and line-search Newton-CG (Nocedal & Wright Ch. 3.4 and 7.1),
on the exact Hessian from the shared ``HessianOperator``.

- ``Newton`` (small models): the dense Hessian H (one product per parameter) is made positive definite
  before solving B d = -g:
  ``modification="eigen"``: B = Q max(Lambda, delta) Q^T with delta = ``min_curvature`` * max(1, max|lambda|)
  (N&W eq. 3.41: negative eigenvalues raised to a small positive value, so a saddle direction gets a
  tiny but positive curvature, not a flipped sign: compare saddle-free Newton);
  ``modification="cholesky"``: B = H + tau I with the smallest tau in 0, beta, 2 beta, ... (times 2) for which
  Cholesky succeeds, tau_0 = 0 when min diag(H) > 0 (N&W Algorithm 3.3, beta = 1e-3 max|H_ii|).
- ``NewtonCG``: CG on H d = -g stopped at ||r|| <= min(0.5, sqrt(||g||)) ||g|| (or ``tolerance`` ||g||) or at the first direction
  of non-positive curvature (then the CG iterate so far, or -g at the first iteration: N&W Algorithm 7.1).

Both finish with a strong-Wolfe line search from t = lr (1: the Newton step) on the same mini-batch.
"""

from __future__ import annotations

import math

import torch

from landscape.linalg.cg import conjugate_gradient
from landscape.linalg.line_search import search_along
from landscape.linalg.operators import HessianOperator
from landscape.objective import Objective

from .curvature_optimizer import CurvatureOptimizer


class _LineSearchNewton(CurvatureOptimizer):
    """A Newton direction followed by a strong-Wolfe line search on the same mini-batch."""

    def _search(self, obj: Objective, loss: torch.Tensor, g: torch.Tensor, d: torch.Tensor) -> float:
        """Move the parameters along d by a strong-Wolfe step; returns the step length (0: no decrease)."""
        group = self.param_groups[0]

        def value_and_grad() -> tuple[float, torch.Tensor]:
            value, grad = self.loss_and_gradient(obj)
            return float(value), grad

        result = search_along(list(obj.theta.values()), value_and_grad, obj.point(), float(loss), g, d,
                              group["lr"], 1e-4, 0.9, group["max_evaluations"])
        return result.step


class Newton(_LineSearchNewton):
    """Newton's method with a modified Hessian (Nocedal & Wright Sec. 3.4): d = -B^-1 g with B the dense
    Hessian made positive definite (eigenvalue or Cholesky modification), then a strong-Wolfe line search.

    Args:
        params: the parameters to optimize (a subset of ``model``'s); model: the module; loss: its loss name.
        lr: first trial step (1: the Newton step). modification: ``"eigen"`` or ``"cholesky"``.
        min_curvature: the smallest eigenvalue kept (relative). max_evaluations: of the line search.
        max_parameters: refuse larger problems (the Hessian is dense).
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2: g + weight_decay w, H + weight_decay I.
    """

    def __init__(self, params, model: torch.nn.Module, loss: str = "cross_entropy", lr: float = 1.0,
                 modification: str = "eigen", min_curvature: float = 1e-8, max_evaluations: int = 25,
                 max_parameters: int = 4096, weight_decay: float = 0.0):
        if modification not in ("eigen", "cholesky"):
            raise ValueError("modification must be 'eigen' or 'cholesky'")
        super().__init__(params, model, loss, dict(lr=lr, modification=modification, min_curvature=min_curvature,
                                                   max_evaluations=max_evaluations, weight_decay=weight_decay))
        n = sum(p.numel() for p in self.param_groups[0]["params"])
        if n > max_parameters:
            raise ValueError(f"Newton forms the dense {n}x{n} Hessian; more than max_parameters={max_parameters} "
                             "parameters (use newton-cg, hessian-free or raise max_parameters)")

    @staticmethod
    def modified_direction(h: torch.Tensor, g: torch.Tensor, modification: str, min_curvature: float
                           ) -> torch.Tensor:
        """-B^-1 g for the modified Hessian B (float64)."""
        h, g64 = h.double(), g.double()
        if modification == "eigen":
            lam, q = torch.linalg.eigh(h)
            delta = min_curvature * max(1.0, float(lam.abs().max()))
            return -(q @ ((q.T @ g64) / torch.clamp(lam, min=delta))).to(g.dtype)
        beta = 1e-3 * max(float(torch.diagonal(h).abs().max()), 1e-12)
        low = float(torch.diagonal(h).min())
        tau = 0.0 if low > 0 else -low + beta
        eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        while True:
            factor, info = torch.linalg.cholesky_ex(h + tau * eye)
            if int(info) == 0:
                return -torch.cholesky_solve(g64[:, None], factor)[:, 0].to(g.dtype)
            tau = max(2.0 * tau, beta)

    def _step(self, batch):
        group = self.param_groups[0]
        obj = self.objective(batch)
        loss, g = self.loss_and_gradient(obj)
        h = HessianOperator(obj).to_dense()
        if group["weight_decay"]:
            h = h + group["weight_decay"] * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        d = self.modified_direction(h, g, group["modification"], group["min_curvature"])
        self.scalars["step_size"] = self._search(obj, loss, g, d)
        return loss


class NewtonCG(_LineSearchNewton):
    """Line-search Newton-CG (Nocedal & Wright Algorithm 7.1): CG on (H + weight_decay I) d = -g, stopped by
    the forcing term or at negative curvature, then a strong-Wolfe line search.

    Args:
        params: the parameters to optimize (a subset of ``model``'s); model: the module; loss: its loss name.
        lr: first trial step. cg_iterations: at most. tolerance: relative residual (default
            min(0.5, sqrt ||g||)). max_evaluations: of the line search.
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2, in the loss, its gradient and H.
    """

    def __init__(self, params, model: torch.nn.Module, loss: str = "cross_entropy", lr: float = 1.0,
                 cg_iterations: int = 100, tolerance: float | None = None, max_evaluations: int = 25,
                 weight_decay: float = 0.0):
        super().__init__(params, model, loss, dict(lr=lr, cg_iterations=cg_iterations, tolerance=tolerance,
                                           max_evaluations=max_evaluations, weight_decay=weight_decay))

    def _step(self, batch):
        group = self.param_groups[0]
        obj = self.objective(batch)
        loss, g = self.loss_and_gradient(obj)
        op = HessianOperator(obj)
        wd = group["weight_decay"]
        g_norm = float(g.norm())
        if g_norm == 0:
            return loss
        forcing = group["tolerance"] if group["tolerance"] is not None else min(0.5, math.sqrt(g_norm))
        cg = conjugate_gradient(lambda v: op.matvec(v) + wd * v, -g, max_iter=group["cg_iterations"], tol=forcing)
        d = cg.solution if (cg.iterations > 0 and bool(cg.solution.any())) else -g
        self.scalars["cg_iterations"] = cg.iterations
        self.scalars["step_size"] = self._search(obj, loss, g, d)
        return loss
