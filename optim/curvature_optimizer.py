"""Base class and calling convention of the curvature-based optimizers (CurveBall, AdaHessian,
Newton, Gauss-Newton / Levenberg-Marquardt, Hessian-free, saddle-free Newton, K-FAC).

They need the loss as a function of the parameters, not only its gradient, so besides the parameters
they are built from the model and the loss name, like every registry optimizer
(``build_optimizer(spec, params, model=model, loss=loss)``), and stepped with the mini-batch's
:class:`~landscape.optim.Closure`::

    opt = CurveBall(model.parameters(), model, loss="cross_entropy")
    for x, y in loader:
        loss = opt.step(Closure(model, opt, loss_fn, x, y))   # or opt.step(batch=(x, y))

They read ``closure.batch`` and evaluate the loss themselves. The curvature products come from the shared
operators of ``landscape.linalg.operators`` on ``Objective.live(model, x, y, loss, params=names)``: the live
parameters, no copy, and only the parameters given (a subset of the model's is honoured: the others are
constants, exactly as if they were frozen). ``weight_decay`` is the coupled L2 term (weight_decay / 2)
||w||^2 added to the loss: its gradient weight_decay * w and its curvature weight_decay * I enter every
model these methods build.
"""

from __future__ import annotations

import math

import torch

from landscape.losses import get_loss
from landscape.objective import Objective, batchnorm_statistics_frozen


class CurvatureOptimizer(torch.optim.Optimizer):
    """Base of the optimizers that evaluate the loss as a function of the parameters (module docstring).

    Args:
        params: the parameters to optimize, all of them parameters of ``model`` (one group; those that
            do not require grad are left out).
        model: the module whose loss is minimised.
        loss: a loss name of :mod:`landscape.losses`.
        defaults: the group's hyper-parameters (``lr``, ``weight_decay``, ...).

    Attributes:
        names: the names in ``model`` of the optimized parameters, in the model's order.
        scalars: optimizer-wide state (step counters, damping, ...).
    """

    def __init__(self, params, model: torch.nn.Module, loss: str, defaults: dict):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{type(self).__name__} is built from (params, model, loss): "
                            f"{type(self).__name__}(model.parameters(), model, loss=...)")
        if isinstance(params, torch.nn.Module):
            raise TypeError(f"{type(self).__name__}'s first argument is the parameters: "
                            f"{type(self).__name__}(model.parameters(), model, loss=...)")
        params = list(params)
        if params and isinstance(params[0], dict):
            if len(params) != 1:
                raise ValueError("curvature optimizers use a single parameter group")
            params = [{**params[0], "params": [p for p in params[0]["params"] if p.requires_grad]}]
        else:
            params = [p for p in params if p.requires_grad]
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("curvature optimizers use a single parameter group")
        chosen = {id(p) for p in self.param_groups[0]["params"]}
        named = list(model.named_parameters())
        foreign = chosen - {id(p) for _, p in named}
        if foreign:
            raise ValueError(f"{type(self).__name__} optimizes parameters of the model it is built from; "
                             f"{len(foreign)} of the parameters given are not the model's")
        self.model = model
        self.loss = loss
        self.names = [n for n, p in named if id(p) in chosen]
        get_loss(loss)  # an unknown loss name fails here, not at the first step

    def step(self, closure=None, *, batch=None):
        """One step on the mini-batch ``closure.batch`` (or ``batch``); returns the loss before it."""
        with batchnorm_statistics_frozen(self.model, after_first_forward=True), torch.enable_grad():
            return self._step(self.batch_of(closure, batch))

    def _step(self, batch):
        raise NotImplementedError

    def batch_of(self, closure=None, batch=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's mini-batch: ``batch``, or ``closure.batch``."""
        if batch is None:
            batch = getattr(closure, "batch", None)
        if batch is None:
            raise RuntimeError(f"{type(self).__name__} needs the mini-batch: step(closure) with a "
                               "landscape.optim.Closure (it carries .batch), or step(batch=(x, y))")
        return batch

    def objective(self, batch) -> Objective:
        """The live objective of the mini-batch ``(x, y)`` over the optimized parameters."""
        x, y = batch
        return Objective.live(self.model, x, y, self.loss, params=self.names)

    @property
    def scalars(self) -> dict:
        """Optimizer-wide state (held in the first parameter's state: state keys must be parameters)."""
        return self.state[self.param_groups[0]["params"][0]]

    @torch.no_grad()
    def add_to_params(self, objective: Objective, vector: torch.Tensor, alpha: float = 1.0) -> None:
        for name, piece in objective.layout.unflatten(vector).items():
            objective.theta[name].add_(piece, alpha=alpha)

    def loss_and_gradient(self, objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        """The mini-batch loss with the coupled weight-decay term, and its flat gradient."""
        value, g = objective.value_and_gradient()
        loss = torch.tensor(value, dtype=g.dtype, device=g.device)  # the batch mean, exactly (one batch)
        wd = self.param_groups[0].get("weight_decay", 0.0)
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
