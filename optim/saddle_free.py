"""Saddle-free Newton in a Krylov subspace (Dauphin, Pascanu, Gulcehre, Cho, Ganguli & Bengio 2014,
"Identifying and attacking the saddle point problem in high-dimensional non-convex optimization").

k Lanczos steps on the Hessian H (the shared ``HessianOperator``), started from the gradient, give
an orthonormal basis V and T = V^T H V = S Theta S^T; with the Ritz vectors U = V S the step is

    d = -U (|Theta| + damping)^-1 U^T g  -  lr_perp (g - U U^T g)

i.e. Newton with the absolute values of the curvatures in the subspace (negative-curvature directions
are descended, not attracted to), plus a gradient step in the complement. A backtracking line
search (halving from t = lr, Armijo c = 1e-4) makes the step decrease the mini-batch loss.
"""

from __future__ import annotations

import numpy as np
import torch

from landscape.linalg.lanczos import LanczosProcess
from landscape.linalg.operators import HessianOperator, ShiftedOperator

from .curvature_optimizer import CurvatureOptimizer


class SaddleFreeNewton(CurvatureOptimizer):
    """Saddle-free Newton (Dauphin et al. 2014, "Identifying and attacking the saddle point problem in
    high-dimensional non-convex optimization") in a k-dimensional Lanczos subspace:
    d = -U (|Theta| + damping)^-1 U^T g - complement_lr (g - U U^T g), then Armijo backtracking.

    Args:
        params: the parameters to optimize (a subset of ``model``'s); model: the module; loss: its loss name.
        lr: first trial step. krylov_dim: k. damping: added to |Theta|. complement_lr: gradient step outside.
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2, in the loss, its gradient and H.
    """

    def __init__(self, params, model: torch.nn.Module, loss: str = "cross_entropy", lr: float = 1.0, krylov_dim: int = 20,
                 damping: float = 1e-4, complement_lr: float = 0.0, weight_decay: float = 0.0):
        if int(krylov_dim) != krylov_dim or krylov_dim < 1:
            raise ValueError("krylov_dim must be a positive integer")
        if not damping >= 0:
            raise ValueError("damping must be >= 0")
        super().__init__(params, model, loss, dict(lr=lr, krylov_dim=int(krylov_dim), damping=damping,
                                           complement_lr=complement_lr, weight_decay=weight_decay))

    def direction(self, obj, g: torch.Tensor) -> torch.Tensor:
        group = self.param_groups[0]
        op = ShiftedOperator(HessianOperator(obj), group["weight_decay"])
        k = min(group["krylov_dim"], obj.dim)
        process = LanczosProcess(op, g, k)
        for _ in range(k):
            if not process.step():
                break
        theta, s, _ = process.ritz()
        u = process.vectors(s).to(g.dtype)  # (n, m) Ritz vectors
        coeff = u.T @ g
        scale = torch.as_tensor(1.0 / (np.abs(theta) + group["damping"]), dtype=g.dtype, device=g.device)
        d = -(u @ (scale * coeff))
        if group["complement_lr"]:
            d = d - group["complement_lr"] * (g - u @ coeff)
        self.scalars["min_curvature"] = float(theta.min())
        return d

    def _step(self, batch):
        group = self.param_groups[0]
        obj = self.objective(batch)
        loss, g = self.loss_and_gradient(obj)
        if float(g.norm()) == 0:
            return loss
        d = self.direction(obj, g)
        self.scalars["step_size"] = self.backtrack(obj, d, float(loss), float(g @ d), group["lr"])
        return loss
