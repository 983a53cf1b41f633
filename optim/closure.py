"""The one closure type every optimizer is stepped with, and the coupled L2 term of closure-driven optimizers."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from landscape import distributed
from landscape.errors import LandscapeError


def _forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    """model(x), under bfloat16 autocast with ``bf16`` (the loss is then computed in float32)."""
    if not bf16:
        return model(x)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
        return model(x).float()


class Closure:
    """The closure of one mini-batch, ``loss = closure(part=None)``, that every optimizer is stepped with
    (``optimizer.step(closure)``).

    Calling it zeroes the optimizer's gradients, evaluates the mean loss of the mini-batch ``(x, y)`` and
    back-propagates: first-order optimizers call it once, line searches as often as they need.
    ``part=(i, k)`` evaluates only chunk i of ``torch.tensor_split(batch, k)`` (SAM's m-sharpness). The
    curvature optimizers (CurveBall, the Newton family, AdaHessian, K-FAC) read the mini-batch from
    ``closure.batch`` and evaluate the loss as a function of the parameters themselves.

    Args:
        model: the module called as ``model(x)``.
        optimizer: whose gradients are zeroed before each evaluation.
        loss_fn: ``loss_fn(output, target)``, the mean loss over the samples.
        x, y: the mini-batch.
        bf16: evaluate the forward pass under bfloat16 autocast.

    Attributes:
        batch: ``(x, y)``.
        batch_size: the number of samples B.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
                 x: torch.Tensor, y: torch.Tensor, bf16: bool = False):
        self.model, self.optimizer, self.loss_fn, self.bf16 = model, optimizer, loss_fn, bf16
        self.batch = (x, y)
        self.batch_size = int(x.shape[0])

    def __call__(self, part: tuple[int, int] | None = None) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        x, y = self.batch
        if part is not None:
            x, y = x.tensor_split(part[1])[part[0]], y.tensor_split(part[1])[part[0]]
        loss = self.loss_fn(_forward(self.model, x, self.bf16), y)
        loss.backward()
        return loss


class DataParallelClosure(Closure):
    """The :class:`Closure` of a global mini-batch under DistributedDataParallel: rank r evaluates its block of
    ``(x, y)``, weighted by W n_r / n so that DDP's gradient average is the gradient of the global mean loss;
    the value returned is the global mean loss (all-reduced), the same on every rank. ``model`` is the DDP
    module; ``batch`` and ``batch_size`` describe the global mini-batch."""

    def __call__(self, part: tuple[int, int] | None = None) -> torch.Tensor:
        if part is not None:
            raise LandscapeError("SAM's m-sharpness does not run under torchrun")
        size, rank = distributed.world_size(), distributed.rank()
        xb, yb = self.batch
        x, y = xb.tensor_split(size)[rank], yb.tensor_split(size)[rank]
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(_forward(self.model, x, self.bf16), y)
        (loss * (size * x.shape[0] / self.batch_size)).backward()
        return distributed.all_reduce_sum(loss.detach() * (x.shape[0] / self.batch_size))


def l2_value(params: Sequence[torch.Tensor], weight_decay: float) -> torch.Tensor:
    """(weight_decay / 2) sum_p ||p||^2."""
    return 0.5 * weight_decay * sum(p.pow(2).sum() for p in params)


def with_l2(closure: Callable[..., torch.Tensor], params: Sequence[torch.Tensor],
            weight_decay: float) -> Callable[..., torch.Tensor]:
    """The closure of loss + (weight_decay / 2) ||w||^2: it calls ``closure`` (any arguments, e.g. ``part``),
    adds weight_decay * w to the gradients it left and returns the regularized loss. The coupled weight decay
    of the optimizers that re-evaluate the loss (L-BFGS, BFGS, nonlinear CG), so their line searches see it.
    ``closure`` itself when weight_decay is 0."""
    if not weight_decay:
        return closure

    def regularized(*args, **kwargs) -> torch.Tensor:
        loss = closure(*args, **kwargs)
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.grad.add_(weight_decay * p)
            return loss.detach() + l2_value(params, weight_decay)

    for name in ("batch", "batch_size"):
        if hasattr(closure, name):
            setattr(regularized, name, getattr(closure, name))
    return regularized
