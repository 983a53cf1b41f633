"""Iterate averaging around any optimizer, with the average swapped in for evaluation.

- Polyak-Ruppert averaging (Polyak & Juditsky 1992), ``decay=None``: after ``start`` steps,
  avg_n = avg_{n-1} + (theta_n - avg_{n-1}) / n, the uniform mean of the iterates since then.
- Exponential moving average, ``decay=b``: avg <- b avg + (1 - b) theta.

The parameters keep following the inner optimizer; ``with opt.averaged(): evaluate(model)`` swaps
the averages in and restores the iterates afterwards (the training loop evaluates this way).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .wrapper import OptimizerWrapper


class IterateAveraging(OptimizerWrapper):
    """Iterate averaging around any optimizer: uniform Polyak-Ruppert averaging (Polyak & Juditsky 1992,
    "Acceleration of stochastic approximation by averaging") after ``start`` steps, or an exponential
    moving average with ``decay``; :meth:`averaged` swaps the average in for evaluation.

    Args:
        inner: the optimizer whose iterates are averaged. decay: EMA coefficient (None: uniform).
        start: steps before the average begins.
    """

    def __init__(self, inner: torch.optim.Optimizer, decay: float | None = None, start: int = 0):
        if decay is not None and not 0 <= decay < 1:
            raise ValueError("decay must be in [0, 1) (or None for the uniform Polyak average)")
        if int(start) != start or start < 0:
            raise ValueError("start must be a non-negative integer")
        super().__init__(inner, decay=decay, start=int(start))

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.inner.step(closure)
        scalars = self._scalars()
        steps = scalars["steps"] = scalars.get("steps", 0) + 1
        for group in self.param_groups:
            if steps <= group["start"]:
                continue
            n = steps - group["start"]  # iterates averaged so far, this one included
            for p in group["params"]:
                state = self.state[p]
                if "average" not in state:
                    state["average"] = p.detach().clone()
                elif group["decay"] is None:
                    state["average"].add_(p - state["average"], alpha=1.0 / n)
                else:
                    state["average"].lerp_(p, 1.0 - group["decay"])
        return loss

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """Swap the averages into the parameters for the duration of the block (no-op before ``start``)."""
        swapped = [(p, self.state[p]["average"]) for g in self.param_groups for p in g["params"]
                   if "average" in self.state[p]]
        with torch.no_grad():
            for p, avg in swapped:
                tmp = p.detach().clone()
                p.copy_(avg)
                avg.copy_(tmp)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, avg in swapped:
                    tmp = p.detach().clone()
                    p.copy_(avg)
                    avg.copy_(tmp)
