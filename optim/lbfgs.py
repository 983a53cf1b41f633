"""L-BFGS (Nocedal 1980; Liu & Nocedal 1989) as torch.optim.LBFGS, with the coupled weight decay of the suite."""

from __future__ import annotations

import torch

from .closure import with_l2
from .state import load_keeping_new_options


class LBFGS(torch.optim.LBFGS):
    """torch.optim.LBFGS (two-loop recursion over the last ``history_size`` pairs s = w_{k+1} - w_k,
    y = g_{k+1} - g_k, Nocedal & Wright Algorithm 7.4; strong-Wolfe line search with
    ``line_search_fn="strong_wolfe"``) on the loss plus the coupled L2 term (weight_decay / 2) ||w||^2,
    whose value and gradient weight_decay * w the closure's results include, so the line search sees it.

    Args:
        params: the parameters (one group).
        lr: the first trial step of each line search (1: the quasi-Newton step).
        max_iter, max_eval, tolerance_grad, tolerance_change, history_size, line_search_fn: as torch's.
        weight_decay: coupled L2 coefficient.

    ``step(closure)`` calls the closure ``max_iter`` times at most (one L-BFGS iteration each, plus the
    line search's evaluations).
    """

    def __init__(self, params, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                         tolerance_change=tolerance_change, history_size=history_size,
                         line_search_fn=line_search_fn)
        for group in self.param_groups:
            group["weight_decay"] = weight_decay

    @torch.no_grad()
    def step(self, closure):
        group = self.param_groups[0]
        return super().step(with_l2(closure, group["params"], group["weight_decay"]))

    def load_state_dict(self, state_dict) -> None:
        load_keeping_new_options(self, super().load_state_dict, state_dict)
