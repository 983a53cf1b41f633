"""Lookahead (Zhang, Lucas, Hinton & Ba 2019, "Lookahead Optimizer: k steps forward, 1 step back").

The inner optimizer updates the fast weights theta; every k of its steps the slow weights move
towards them and the fast weights restart from there:

    phi <- phi + alpha (theta - phi),    theta <- phi          (phi_0 = theta_0)
"""

from __future__ import annotations

import torch

from .wrapper import OptimizerWrapper


class Lookahead(OptimizerWrapper):
    """Lookahead (Zhang, Lucas, Hinton & Ba 2019, "Lookahead optimizer: k steps forward, 1 step back"):
    every k inner steps phi <- phi + alpha (theta - phi), theta <- phi.

    Args:
        inner: the optimizer of the fast weights (its weight decay applies as it would alone).
        k: inner steps per synchronisation. alpha: slow-weight step in (0, 1].
    """

    def __init__(self, inner: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if int(k) != k or k < 1:
            raise ValueError("k must be a positive integer")
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        super().__init__(inner, k=int(k), alpha=float(alpha))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if "slow" not in self.state[p]:
                    self.state[p]["slow"] = p.detach().clone()
        loss = self.inner.step(closure)
        scalars = self._scalars()
        scalars["fast_steps"] = scalars.get("fast_steps", 0) + 1
        for group in self.param_groups:
            if scalars["fast_steps"] % group["k"]:
                continue
            for p in group["params"]:
                slow = self.state[p]["slow"]
                slow.add_(p - slow, alpha=group["alpha"])
                p.copy_(slow)
        return loss
