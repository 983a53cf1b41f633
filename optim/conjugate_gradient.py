"""Nonlinear conjugate gradient with a strong-Wolfe line search and restarts.

Directions d_0 = -g_0, d_k = -g_k + beta_k d_{k-1} (Nocedal & Wright, Algorithm 5.4), with

- Fletcher-Reeves (1964):  beta = ||g_k||^2 / ||g_{k-1}||^2
- Polak-Ribiere (1969):    beta = g_k^T (g_k - g_{k-1}) / ||g_{k-1}||^2, and PR+ (Gilbert & Nocedal
  1992): beta = max(beta_PR, 0), the default, which restarts by itself when beta_PR < 0.

Restarts (d = -g): every ``restart_every`` iterations (default: the number of parameters), when
consecutive gradients are far from orthogonal (|g_k^T g_{k-1}| >= 0.1 ||g_k||^2, Powell 1977), when
d is not a descent direction, and after a failed line search. The line search uses c2 = 0.1 as
recommended for CG; its first trial step is lr * min(1, 1 / ||g_0||_1), later ones
t_{k-1} g_{k-1}^T d_{k-1} / g_k^T d_k (N&W eq. 3.60). One ``step(closure)`` is one CG iteration;
the closure must re-evaluate the loss and gradients (it is called once plus once per line-search trial).
"""

from __future__ import annotations

import torch

from landscape.linalg.line_search import closure_value_and_grad, search_along, value
from landscape.params import flat_grad, flatten

from .closure import with_l2
from .state import load_keeping_new_options

VARIANTS = ("fr", "pr", "pr+")


class NonlinearCG(torch.optim.Optimizer):
    """Nonlinear conjugate gradient (Nocedal & Wright Algorithm 5.4): d_k = -g_k + beta_k d_{k-1} with
    Fletcher-Reeves, Polak-Ribiere or PR+ beta, restarts, and a strong-Wolfe line search (module docstring).

    Args:
        params: the parameters (one group). lr: scales the first trial step. variant: ``"fr"``, ``"pr"``,
            ``"pr+"``. c1, c2: the Wolfe constants. restart_every: default the number of parameters.
        max_evaluations: of a line search.
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2 added to the closure's loss and gradient.
    """

    def __init__(self, params, lr: float = 1.0, variant: str = "pr+", c1: float = 1e-4, c2: float = 0.1,
                 restart_every: int | None = None, max_evaluations: int = 25, weight_decay: float = 0.0):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}")
        if not 0 < c1 < c2 < 1:
            raise ValueError("need 0 < c1 < c2 < 1")
        super().__init__(params, dict(lr=lr, variant=variant, c1=c1, c2=c2, restart_every=restart_every,
                                      max_evaluations=max_evaluations, weight_decay=weight_decay))
        if len(self.param_groups) != 1:
            raise ValueError("conjugate gradient supports a single parameter group")

    def load_state_dict(self, state_dict) -> None:
        load_keeping_new_options(self, super().load_state_dict, state_dict)

    @property
    def _params(self) -> list[torch.Tensor]:
        return list(self.param_groups[0]["params"])

    @torch.no_grad()
    def step(self, closure):
        if closure is None:
            raise RuntimeError("conjugate gradient needs a closure that re-evaluates the loss")
        group = self.param_groups[0]
        params = self._params
        closure = with_l2(closure, params, group["weight_decay"])
        with torch.enable_grad():
            loss = closure()
        g = flat_grad(params)
        state = self.state[params[0]]
        n = g.numel()
        restart_every = group["restart_every"] or n
        d_prev = state.get("direction")
        g_prev = state.get("grad")
        iteration = state.get("iteration", 0)
        since_restart = state.get("since_restart", 0)
        restart = d_prev is None or since_restart >= restart_every
        if not restart:
            gg_prev = float(g_prev @ g_prev)
            if gg_prev == 0 or abs(float(g @ g_prev)) >= 0.1 * float(g @ g):
                restart = True
        if restart:
            d, since_restart = -g, 0
        else:
            if group["variant"] == "fr":
                beta = float(g @ g) / gg_prev
            else:
                beta = float(g @ (g - g_prev)) / gg_prev
                if group["variant"] == "pr+":
                    beta = max(beta, 0.0)
            d = -g + beta * d_prev
            if not float(g @ d) < 0:
                d, since_restart = -g, 0
        gtd = float(g @ d)
        if gtd == 0:  # zero gradient: a stationary point
            return loss
        if iteration == 0 or "step_size" not in state:  # first step, or every search so far failed
            t0 = group["lr"] * min(1.0, 1.0 / float(g.abs().sum()))
        else:
            t0 = state["step_size"] * state["gtd"] / gtd
        result = search_along(params, closure_value_and_grad(params, closure), flatten(params), value(loss), g,
                              d, t0, group["c1"], group["c2"], group["max_evaluations"])
        if result.step == 0.0:  # no decrease along d: restart next time from steepest descent
            state.pop("direction", None)
            state["iteration"] = iteration + 1
            return loss
        state.update(direction=d, grad=g, gtd=gtd, step_size=result.step, iteration=iteration + 1,
                     since_restart=since_restart + 1)
        return loss
