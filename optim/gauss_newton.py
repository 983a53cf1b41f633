"""Gauss-Newton and Levenberg-Marquardt steps on the generalized Gauss-Newton matrix G (the shared
``GGNOperator``; for least squares, G = 2 J^T J of the residuals).

- Gauss-Newton: d = -(G + eps I)^-1 g, then a backtracking (Armijo) line search from t = 1.
- Levenberg-Marquardt (Levenberg 1944; Marquardt 1963; Moré 1978): d = -(G + mu D)^-1 g with D = I
  (``scaling="identity"``) or D = diag(G) (``"diagonal"``, Marquardt's scale invariance), accepted when
  the reduction ratio rho = (f(w) - f(w + d)) / (m(0) - m(d)) of actual to predicted decrease,
  m(d) = f + g^T d + 1/2 d^T G d, is positive; then mu <- mu max(1/3, 1 - (2 rho - 1)^3) and nu = 2,
  otherwise mu <- nu mu, nu <- 2 nu and the step is solved again (Nielsen 1999). mu starts at
  ``damping``, or at 1e-3 max diag(G) when unset (Madsen, Nielsen & Tingleff 2004).

Systems with up to ``dense_limit`` unknowns are solved exactly with the dense G (one product per
parameter); larger ones by conjugate gradient on the operator (``cg_iterations`` products at most).
One ``step`` uses one mini-batch throughout (the stochastic problems draw it per step).
"""

from __future__ import annotations

import math

import torch

from landscape.linalg.cg import conjugate_gradient
from landscape.linalg.operators import GGNOperator, ShiftedOperator
from landscape.objective import Objective

from .curvature_optimizer import CurvatureOptimizer


class _GaussNewtonBase(CurvatureOptimizer):
    """Shared linear algebra of Gauss-Newton and Levenberg-Marquardt: the system G + weight_decay I, dense
    up to ``dense_limit`` unknowns, otherwise by CG on the operator.
    """

    def _system(self, obj: Objective):
        """(apply G, dense G or None, diag(G) or None) for the curvature of the regularized loss, i.e. the
        Gauss-Newton matrix plus weight_decay I."""
        group = self.param_groups[0]
        op = ShiftedOperator(GGNOperator(obj), group["weight_decay"])
        if obj.dim <= group["dense_limit"]:
            dense = op.to_dense().double()
            return (lambda v: (dense @ v.double()).to(v.dtype)), dense, torch.diagonal(dense).to(obj.dtype)
        return op.matvec, None, None

    def _solve(self, apply, dense, b: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
        """(G + shift) d = b, where shift is a number or a vector (a diagonal matrix)."""
        if dense is not None:
            shifted = dense + torch.diag(torch.as_tensor(shift, dtype=torch.float64, device=dense.device)
                                         .broadcast_to(dense.shape[:1]))
            try:
                return torch.linalg.solve(shifted, b.double()).to(b.dtype)
            except RuntimeError:  # singular: least-squares solution
                return torch.linalg.lstsq(shifted, b.double()[:, None]).solution[:, 0].to(b.dtype)
        return conjugate_gradient(lambda v: apply(v) + shift * v, b,
                                  max_iter=self.param_groups[0]["cg_iterations"], tol=1e-8).solution


class GaussNewton(_GaussNewtonBase):
    """Gauss-Newton: d = -(G + damping I)^-1 g on the generalized Gauss-Newton matrix G, then Armijo
    backtracking from t = lr (Nocedal & Wright Sec. 10.3; the GGN of Schraudolph 2002 for other losses).

    Args:
        params: the parameters to optimize (a subset of ``model``'s); model: the module; loss: its loss name.
        lr: first trial step. damping: eps added to G. c1, max_backtracks: the Armijo condition and tries.
        dense_limit: largest system solved densely; cg_iterations: CG iterations above it.
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2, in the loss, its gradient and G.
    """

    def __init__(self, params, model: torch.nn.Module, loss: str = "mse", lr: float = 1.0, damping: float = 1e-8,
                 c1: float = 1e-4, max_backtracks: int = 30, dense_limit: int = 2000, cg_iterations: int = 100,
                 weight_decay: float = 0.0):
        super().__init__(params, model, loss, dict(lr=lr, damping=damping, c1=c1, max_backtracks=max_backtracks,
                                           dense_limit=dense_limit, cg_iterations=cg_iterations,
                                           weight_decay=weight_decay))

    def _step(self, batch):
        group = self.param_groups[0]
        obj = self.objective(batch)
        loss, g = self.loss_and_gradient(obj)
        apply, dense, _ = self._system(obj)
        d = self._solve(apply, dense, -g, group["damping"])
        slope = float(g @ d)
        if not slope < 0:
            d, slope = -g, -float(g @ g)
        self.scalars["step_size"] = self.backtrack(obj, d, float(loss), slope, group["lr"], group["c1"],
                                                   tries=group["max_backtracks"])
        return loss


class LevenbergMarquardt(_GaussNewtonBase):
    """Levenberg-Marquardt (Levenberg 1944; Marquardt 1963; the damping rule of Nielsen 1999):
    d = -(G + mu D)^-1 g, accepted when the reduction ratio is positive, mu adapted from it (module docstring).

    Args:
        params: the parameters to optimize (a subset of ``model``'s); model: the module; loss: its loss name.
        damping: mu_0 (default 1e-3 max diag G). scaling: D = I (``"identity"``) or diag(G) (``"diagonal"``).
        max_tries: solves per step. dense_limit, cg_iterations: as GaussNewton. lr: scales the accepted step.
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2, in the loss, its gradient and G.
    """

    def __init__(self, params, model: torch.nn.Module, loss: str = "mse", damping: float | None = None,
                 scaling: str = "identity", max_tries: int = 30, dense_limit: int = 2000, cg_iterations: int = 100,
                 lr: float = 1.0, weight_decay: float = 0.0):
        if scaling not in ("identity", "diagonal"):
            raise ValueError("scaling must be 'identity' or 'diagonal'")
        if damping is not None and not damping > 0:
            raise ValueError("damping must be positive")
        super().__init__(params, model, loss, dict(lr=lr, damping=damping, scaling=scaling, max_tries=max_tries,
                                           dense_limit=dense_limit, cg_iterations=cg_iterations,
                                           weight_decay=weight_decay))

    def _step(self, batch):
        group = self.param_groups[0]
        obj = self.objective(batch)
        loss, g = self.loss_and_gradient(obj)
        apply, dense, diag = self._system(obj)
        state = self.scalars
        if "mu" not in state:
            if group["damping"] is not None:
                mu = group["damping"]
            elif diag is not None:
                mu = 1e-3 * max(float(diag.max()), 1e-12)
            else:
                mu = 1.0
            state.update(mu=mu, nu=2.0, rejected=0)
        if group["scaling"] == "diagonal":
            if diag is None:
                raise RuntimeError("scaling='diagonal' needs the dense GGN (raise dense_limit)")
            scale = torch.clamp(diag, min=1e-12 * max(float(diag.max()), 1e-300))
        else:
            scale = 1.0
        f0 = float(loss)
        for _ in range(group["max_tries"]):
            mu = state["mu"]
            d = self._solve(apply, dense, -g, mu * scale)
            gd = float(g @ d)
            predicted = -(gd + 0.5 * float(d @ apply(d)))
            if not predicted > 1e-15 * max(abs(f0), 1e-30):  # nothing left to gain at machine precision
                break
            self.add_to_params(obj, d, group["lr"])
            f = self.value(obj)
            ratio = (f0 - f) / predicted if predicted > 0 else -1.0
            if math.isfinite(f) and ratio > 0:
                state["mu"] = mu * max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
                state["nu"] = 2.0
                break
            self.add_to_params(obj, d, -group["lr"])
            state["mu"], state["nu"] = mu * state["nu"], 2.0 * state["nu"]
            state["rejected"] += 1
        return loss
