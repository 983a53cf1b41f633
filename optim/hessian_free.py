"""Hessian-free optimization (Martens 2010, "Deep learning via Hessian-free optimization").

Each step approximately minimises the damped quadratic model
q(d) = g^T d + 1/2 d^T (G + lambda I) d with conjugate gradient on the Gauss-Newton matrix G (the
shared ``GGNOperator``):

- warm start from ``decay`` (0.95) times the previous step's solution;
- Martens' stopping rule on the relative progress of q (k = max(10, 0.1 i), epsilon = 5e-4), at most
  ``cg_iterations`` iterations;
- CG backtracking: the iterates at iterations ceil(1.3^j) are kept and the one with the lowest loss on
  the batch, walking back from the last, is taken;
- Levenberg-Marquardt damping from the reduction ratio rho = (f(w + d) - f(w)) / q(d):
  lambda <- 3/2 lambda when rho < 1/4, lambda <- 2/3 lambda when rho > 3/4;
- a backtracking line search on the chosen step (factor 0.8, Armijo c = 1e-2, at most 20 halvings),
  as in Martens & Sutskever (2012).
"""

from __future__ import annotations

import math

import torch

from landscape.linalg.cg import conjugate_gradient
from landscape.linalg.operators import GGNOperator

from .curvature_optimizer import CurvatureOptimizer


class HessianFree(CurvatureOptimizer):
    """Hessian-free optimization (Martens 2010, "Deep learning via Hessian-free optimization"): truncated CG
    on q(d) = g^T d + 1/2 d^T (G + (lambda + weight_decay) I) d with warm starts, CG backtracking,
    Levenberg-Marquardt damping and a final line search (module docstring).

    Args:
        params: the parameters to optimize (a subset of ``model``'s); model: the module; loss: its loss name.
        lr: first trial step of the line search. damping: lambda_0; adapt_damping: the LM rule.
        cg_iterations: at most. decay: warm start from decay times the last solution. epsilon: Martens' rule.
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2, in the loss, its gradient and the curvature.
    """

    def __init__(self, params, model: torch.nn.Module, loss: str = "cross_entropy", lr: float = 1.0, damping: float = 1.0,
                 cg_iterations: int = 250, decay: float = 0.95, epsilon: float = 5e-4, adapt_damping: bool = True,
                 weight_decay: float = 0.0):
        if not damping >= 0:
            raise ValueError("damping must be >= 0")
        super().__init__(params, model, loss, dict(lr=lr, damping=damping, cg_iterations=cg_iterations, decay=decay,
                                           epsilon=epsilon, adapt_damping=adapt_damping, weight_decay=weight_decay))

    def _step(self, batch):
        group = self.param_groups[0]
        obj = self.objective(batch)
        loss, g = self.loss_and_gradient(obj)
        wd = group["weight_decay"]
        state = self.scalars
        if "damping" not in state:
            state.update(damping=group["damping"], previous=torch.zeros_like(g))
        lam = state["damping"]
        op = GGNOperator(obj)

        def apply(v: torch.Tensor) -> torch.Tensor:
            return op.matvec(v) + (lam + wd) * v

        cg = conjugate_gradient(apply, -g, x0=group["decay"] * state["previous"], max_iter=group["cg_iterations"],
                                tol=1e-10, martens_epsilon=group["epsilon"], keep=True)
        f0 = float(loss)
        # CG backtracking: from the last kept iterate back while the loss keeps improving
        best_d, best_f = None, math.inf
        for _, d in reversed(cg.iterates):
            self.add_to_params(obj, d)
            f = self.value(obj)
            self.add_to_params(obj, d, -1.0)
            if f < best_f:
                best_d, best_f = d, f
            else:
                break
        if best_d is None:
            best_d = cg.solution
        state["previous"] = cg.solution
        quad = float(g @ best_d) + 0.5 * float(best_d @ apply(best_d))
        if group["adapt_damping"] and quad < 0 and math.isfinite(best_f):
            ratio = (best_f - f0) / quad
            if ratio < 0.25:
                state["damping"] = lam * 1.5
            elif ratio > 0.75:
                state["damping"] = lam * (2.0 / 3.0)
        t = self.backtrack(obj, best_d, f0, float(g @ best_d), group["lr"], c=1e-2, shrink=0.8, tries=20)
        state["cg_iterations"], state["step_size"] = cg.iterations, t
        return loss
