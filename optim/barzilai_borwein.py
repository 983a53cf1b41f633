"""Stochastic gradient descent with a Barzilai-Borwein step size per epoch (SGD-BB; Tan, Ma, Dai &
Qian 2016; seed ``003_…`` Algorithm 3; Barzilai & Borwein 1988).

An epoch is T = ``steps_per_epoch`` steps at a fixed step eta_k, during which an average of the
stochastic gradients is kept, ghat <- (1 - beta) ghat + beta g (reset to 0 at each epoch start).
From the end points x_k of epochs k-1 and k-2 (and their averages ghat_k):

    s = x_{k-1} - x_{k-2},   y = ghat_{k-1} - ghat_{k-2},   eta_k = ||s||^2 / (T |s^T y|)
    eta_k is kept if it lies in [tau_min / (k+1), tau_max / (k+1)], else replaced by tau_0 / (k+1)

Epochs 0 and 1 use tau_0. tau_0 is the group's ``lr`` (so a schedule scales it); tau_min and
tau_max default to lr / 100 and 100 lr. The seed prints the 1/T factor on s instead of on eta; we
follow Tan et al., where eta is the BB step ||s||^2 / s^T y divided by the T steps that made s.
The current step is ``optimizer.step_size(group_index)``.
"""

from __future__ import annotations

import torch


class BarzilaiBorwein(torch.optim.Optimizer):
    """SGD with a Barzilai-Borwein step per epoch (Tan, Ma, Dai & Qian 2016, "Barzilai-Borwein step size
    for stochastic gradient descent"): eta_k = ||s||^2 / (T |s^T y|) from the last two epochs' end points and
    averaged gradients, kept within [tau_min, tau_max] / (k + 1) (module docstring).

    Args:
        params: the parameters. lr: tau_0, the step of the first two epochs and the fallback.
        steps_per_epoch: T. beta: of the gradient average. tau_min, tau_max: bounds (lr / 100, 100 lr).
        weight_decay: coupled L2: g + weight_decay w.
    """

    def __init__(self, params, lr: float = 0.01, steps_per_epoch: int = 100, beta: float = 0.1,
                 tau_min: float | None = None, tau_max: float | None = None, weight_decay: float = 0.0):
        if int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1:
            raise ValueError("steps_per_epoch must be a positive integer")
        if not 0 < beta <= 1:
            raise ValueError("beta must be in (0, 1]")
        tau_min = lr / 100 if tau_min is None else tau_min
        tau_max = lr * 100 if tau_max is None else tau_max
        if not 0 <= tau_min <= tau_max:
            raise ValueError("need 0 <= tau_min <= tau_max")
        super().__init__(params, dict(lr=lr, steps_per_epoch=int(steps_per_epoch), beta=beta, tau_min=tau_min,
                                      tau_max=tau_max, weight_decay=weight_decay))

    def _counters(self, group: dict) -> dict:
        """Per-group scalars (epoch k, step t within it, current eta), held in the first parameter's state."""
        state = self.state[group["params"][0]]
        if "epoch" not in state:
            state.update(epoch=0, epoch_step=0, eta=float(group["lr"]))
        return state

    def step_size(self, group_index: int = 0) -> float:
        return float(self._counters(self.param_groups[group_index])["eta"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = list(group["params"])
            counters = self._counters(group)
            k, t, T = counters["epoch"], counters["epoch_step"], group["steps_per_epoch"]
            if t == 0:
                counters["eta"] = self._epoch_step_size(group, params, k)
            eta = counters["eta"]
            for p in params:
                state = self.state[p]
                if "average" not in state or t == 0:
                    state["average"] = torch.zeros_like(p)
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                p.sub_(g, alpha=eta)
                state["average"].mul_(1.0 - group["beta"]).add_(g, alpha=group["beta"])
            t += 1
            if t == T:  # epoch k ends: remember x_k and ghat_k (and the previous pair)
                for p in params:
                    state = self.state[p]
                    if "end" in state:
                        state["previous_end"], state["previous_average"] = state["end"], state["end_average"]
                    state["end"], state["end_average"] = p.detach().clone(), state["average"].clone()
                k, t = k + 1, 0
            counters["epoch"], counters["epoch_step"] = k, t
        return loss

    def _epoch_step_size(self, group: dict, params: list, k: int) -> float:
        tau0 = float(group["lr"])
        if k < 2:
            return tau0
        ss = sy = 0.0
        for p in params:
            state = self.state[p]
            s = (state["end"] - state["previous_end"]).double()
            y = (state["end_average"] - state["previous_average"]).double()
            ss += float((s * s).sum())
            sy += float((s * y).sum())
        eta = ss / (group["steps_per_epoch"] * abs(sy)) if sy != 0 else float("inf")
        if group["tau_min"] / (k + 1) <= eta <= group["tau_max"] / (k + 1):
            return eta
        return tau0 / (k + 1)
