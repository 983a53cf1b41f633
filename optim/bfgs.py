"""BFGS with a dense inverse-Hessian approximation and a strong-Wolfe line search (Nocedal & Wright,
Algorithm 6.1), for small models.

    d_k = -H_k g_k,   x_{k+1} = x_k + t_k d_k,   s = t_k d_k,   y = g_{k+1} - g_k,   rho = 1 / y^T s
    H_{k+1} = (I - rho s y^T) H_k (I - rho y s^T) + rho s s^T                     (N&W eq. 6.17)

H_0 = I for the first step (trial step lr * min(1, 1 / ||g_0||_1)), rescaled to (y^T s / y^T y) I
before the first update (N&W eq. 6.20); later trial steps are lr (1: the quasi-Newton step). The
update is skipped when y^T s <= 1e-10 ||s|| ||y|| (no curvature information, e.g. under noise), and H
is reset to the identity after a failed line search. H is held in float64 with n^2 entries, so
``max_parameters`` (default 4096) guards against using this on a large network; use L-BFGS there.
"""

from __future__ import annotations

import torch

from landscape.linalg.line_search import closure_value_and_grad, search_along, value
from landscape.params import flat_grad, flatten

from .closure import with_l2
from .state import load_keeping_new_options


class BFGS(torch.optim.Optimizer):
    """BFGS with a dense inverse-Hessian approximation and a strong-Wolfe line search (Nocedal & Wright
    Algorithm 6.1): d = -H g, H_{k+1} = (I - rho s y^T) H_k (I - rho y s^T) + rho s s^T (module docstring).

    Args:
        params: the parameters (one group). lr: first trial step (1: the quasi-Newton step).
        c1, c2: the Wolfe constants. max_evaluations: of a line search. max_parameters: refuse larger ones.
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2 added to the closure's loss and gradient.

    ``step(closure)`` needs a closure that re-evaluates the loss.
    """

    def __init__(self, params, lr: float = 1.0, c1: float = 1e-4, c2: float = 0.9, max_evaluations: int = 25,
                 max_parameters: int = 4096, weight_decay: float = 0.0):
        if not 0 < c1 < c2 < 1:
            raise ValueError("need 0 < c1 < c2 < 1")
        super().__init__(params, dict(lr=lr, c1=c1, c2=c2, max_evaluations=max_evaluations, weight_decay=weight_decay))
        if len(self.param_groups) != 1:
            raise ValueError("BFGS supports a single parameter group")
        n = sum(p.numel() for p in self.param_groups[0]["params"])
        if n > max_parameters:
            raise ValueError(f"BFGS stores a dense {n}x{n} matrix; the model has more than max_parameters="
                             f"{max_parameters} parameters (use lbfgs, or raise max_parameters)")

    def load_state_dict(self, state_dict) -> None:
        """As torch's, but the float64 matrix keeps its precision (torch casts state to the parameters' dtype)."""
        load_keeping_new_options(self, super().load_state_dict, state_dict)
        first = self.param_groups[0]["params"][0]
        for saved in state_dict["state"].values():
            if "inverse_hessian" in saved:
                self.state[first]["inverse_hessian"] = saved["inverse_hessian"].to(first.device, torch.float64).clone()

    @torch.no_grad()
    def step(self, closure):
        if closure is None:
            raise RuntimeError("BFGS needs a closure that re-evaluates the loss")
        group = self.param_groups[0]
        params = list(group["params"])
        closure = with_l2(closure, params, group["weight_decay"])
        with torch.enable_grad():
            loss = closure()
        g = flat_grad(params)
        state = self.state[params[0]]
        h = state.get("inverse_hessian")
        if h is None:
            d = -g
            t0 = group["lr"] * min(1.0, 1.0 / max(float(g.abs().sum()), 1e-300))
        else:
            d = -(h @ g.double()).to(g.dtype)
            t0 = group["lr"]
        if float(g @ d) >= 0:  # H lost positive definiteness numerically, or g = 0
            if float(g @ g) == 0:
                return loss
            state.pop("inverse_hessian", None)
            d, t0 = -g, group["lr"] * min(1.0, 1.0 / float(g.abs().sum()))
            h = None
        result = search_along(params, closure_value_and_grad(params, closure), flatten(params), value(loss), g,
                              d, t0, group["c1"], group["c2"], group["max_evaluations"])
        if result.step == 0.0:
            state.pop("inverse_hessian", None)
            return loss
        s = (result.step * d).double()
        y = (result.grad - g).double()
        sy = float(s @ y)
        if sy > 1e-10 * float(s.norm() * y.norm()):
            if h is None:
                h = torch.eye(g.numel(), dtype=torch.float64, device=g.device) * (sy / float(y @ y))
            rho = 1.0 / sy
            hy = h @ y
            # (I - rho s y^T) H (I - rho y s^T) + rho s s^T as three in-place rank-one updates
            h.addr_(s, hy, alpha=-rho).addr_(hy, s, alpha=-rho).addr_(s, s, alpha=rho * rho * float(y @ hy) + rho)
            state["inverse_hessian"] = h
        return loss
