"""Base class and calling convention of the curvature-based optimizers (CurveBall, AdaHessian,
Newton, Gauss-Newton / Levenberg-Marquardt, Hessian-free, saddle-free Newton, K-FAC).

They need the loss as a function of the parameters, not only its gradient, so they are built from
the model and the loss name, and stepped with the mini-batch::

    opt = CurveBall(model, loss="cross_entropy")
    for x, y in loader:
        loss = opt.step(batch=(x, y))          # or opt.step(closure) with closure.batch == (x, y)

``landscape.optim.make_closure`` closures carry ``.batch``, so the training loop steps every
optimizer the same way. The curvature products come from the shared operators of
``landscape.linalg.operators`` on ``Objective.live(model, x, y, loss)`` (the live parameters, no copy).
Weight decay is the L2 term (weight_decay / 2) ||w||^2 added to the loss: its gradient
weight_decay * w and its curvature weight_decay * I enter every model these methods build.
"""

from __future__ import annotations

import math

import torch

from landscape.losses import get_loss
from landscape.objective import Objective, batchnorm_statistics_frozen


class CurvatureOptimizer(torch.optim.Optimizer):
    def __init__(self, model: torch.nn.Module, loss: str, defaults: dict):
        if not isinstance(model, torch.nn.Module):
            raise TypeError("curvature optimizers are built from the model: Name(model, loss=...)")
        params = [p for p in model.parameters() if p.requires_grad]
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("curvature optimizers use a single parameter group")
        self.model = model
        self.loss = loss
        get_loss(loss)  # an unknown loss name fails here, not at the first step

    def step(self, closure=None, *, batch=None):
        """One step on the mini-batch ``batch`` (or ``closure.batch``); returns the loss before it."""
        with batchnorm_statistics_frozen(self.model, after_first_forward=True):  # updated once per step
            return self._step(closure, batch)

    def _step(self, closure=None, batch=None):
        raise NotImplementedError

    def objective(self, closure=None, batch=None) -> Objective:
        """The live objective of the step's mini-batch (``batch`` or ``closure.batch``)."""
        if batch is None:
            batch = getattr(closure, "batch", None)
        if batch is None:
            raise RuntimeError(f"{type(self).__name__} needs the mini-batch: step(batch=(x, y)), or a closure "
                               "with a .batch attribute (landscape.optim.make_closure)")
        x, y = batch
        return Objective.live(self.model, x, y, self.loss)

    @property
    def scalars(self) -> dict:
        """Optimizer-wide state (held in the first parameter's state: state keys must be parameters)."""
        return self.state[self.param_groups[0]["params"][0]]

    @torch.no_grad()
    def add_to_params(self, objective: Objective, vector: torch.Tensor, alpha: float = 1.0) -> None:
        for name, piece in objective.layout.unflatten(vector).items():
            objective.theta[name].add_(piece, alpha=alpha)

    def loss_and_gradient(self, objective: Objective, regularize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The mini-batch loss with the weight-decay term (unless ``regularize=False``) and its flat gradient."""
        value, g = objective.value_and_gradient()
        loss = torch.tensor(value, dtype=g.dtype, device=g.device)  # the batch mean, exactly (one batch)
        wd = self.param_groups[0].get("weight_decay", 0.0) if regularize else 0.0
        if wd:
            w = objective.point()
            loss, g = loss + 0.5 * wd * w.pow(2).sum(), g + wd * w
        return loss, g

    def value(self, objective: Objective) -> float:
        """The mini-batch loss with the weight-decay term at the current parameters (no gradient)."""
        wd = self.param_groups[0].get("weight_decay", 0.0)
        value = objective.value()
        return value + (0.5 * wd * float(objective.point().pow(2).sum()) if wd else 0.0)

    def backtrack(self, objective: Objective, direction: torch.Tensor, loss: float, slope: float, step: float,
                  c: float = 1e-4, shrink: float = 0.5, tries: int = 30) -> float:
        """Armijo backtracking: move the parameters by t d for the first t = step, step shrink, ... with
        f(w + t d) <= f(w) + c t slope (slope = g^T d < 0); returns t, or 0.0 (parameters unchanged)."""
        t = step
        for _ in range(tries):
            self.add_to_params(objective, direction, t)
            f = self.value(objective)
            if math.isfinite(f) and f <= loss + c * t * slope:
                return t
            self.add_to_params(objective, direction, -t)
            t *= shrink
        return 0.0
