"""The objective: a model's mean loss over a data set as a pure function of (some of) its parameters.

L(theta) = sum_b (n_b / N) l_b(theta), where l_b is the mean loss over batch b of n_b samples, so
the result is the exact mean over all N samples whatever the batch sizes (a ragged last batch is
weighted correctly). The model is evaluated with ``torch.func.functional_call`` on a private copy
(the caller's model is neither switched to eval mode nor re-cast); buffers such as BatchNorm
statistics are held fixed and the copy runs in eval mode.

Only the selected parameters (``params``; default: all that require grad) are variables; the
others are constants. Parameters that do not influence the loss are allowed: their gradient and
curvature rows are zero.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterable, Iterator, Sequence

import torch
from torch.func import functional_call

from . import distributed
from .errors import LandscapeError
from .losses import get_loss, per_sample
from .params import ParamLayout

DEFAULT_BATCH_SIZE = 1024  # CPU sweet spot between MLPs (~2048) and convolutions (~1024)


class Objective:
    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy", *,
                 batch_size: int | None = None, params: Sequence[str] | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 shard: bool = False):
        model = copy.deepcopy(model)
        device = torch.device(device) if device is not None else next(
            (p.device for p in model.parameters()), x.device)
        if dtype is not None:
            model = model.to(dtype)
            x = x.to(dtype) if x.is_floating_point() else x
            y = y.to(dtype) if y.is_floating_point() else y
        model = model.to(device).eval()
        self.model = model
        self.loss_name = loss
        self.loss_fn = get_loss(loss)
        named = dict(model.named_parameters())
        selected = list(params) if params is not None else [n for n, p in named.items() if p.requires_grad]
        unknown = [n for n in selected if n not in named]
        if unknown:
            raise LandscapeError(f"model has no parameter {unknown[0]!r}")
        if not selected:
            raise LandscapeError("no parameters selected for differentiation")
        self.layout = ParamLayout.from_tensors({n: named[n] for n in selected})
        self.theta = {n: named[n].detach() for n in self.layout.names}
        self.frozen = {n: p.detach() for n, p in named.items() if n not in self.theta}
        self.frozen.update({n: b.detach() for n, b in model.named_buffers()})
        n = x.shape[0]
        if n == 0:
            raise LandscapeError("the objective needs at least one sample")
        bs = min(n, batch_size or DEFAULT_BATCH_SIZE)
        if bs <= 0:
            raise LandscapeError(f"batch size must be positive, got {batch_size}")
        self.sharded = shard and distributed.world_size() > 1
        if self.sharded:  # this rank's contiguous block of samples; sums are all-reduced over the ranks
            lo, hi = distributed.block(n)
            if hi == lo:
                raise LandscapeError(f"{n} samples cannot be shared by {distributed.world_size()} processes")
            x, y = x[lo:hi], y[lo:hi]
        x, y = x.to(device), y.to(device)
        local = x.shape[0]
        bs = min(bs, local)
        self.batches = [(x[i:i + bs], y[i:i + bs]) for i in range(0, local, bs)]
        self.weights = [b[0].shape[0] / n for b in self.batches]
        self.num_samples = n
        self.device = device
        self.dtype = next(iter(self.theta.values())).dtype

    @classmethod
    def live(cls, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy"
             ) -> "Objective":
        """The loss of one mini-batch on ``model`` itself, for optimizers: no copy, the model's own
        train/eval mode and buffers, and ``theta`` holding detached *views* of the live parameters
        (every parameter that requires grad), so in-place updates of the model show through."""
        self = cls.__new__(cls)
        self.sharded = False
        self.model = model
        self.loss_name = loss
        self.loss_fn = get_loss(loss)
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not named:
            raise LandscapeError("the model has no trainable parameters")
        self.layout = ParamLayout.from_tensors(named)
        self.theta = {n: p.detach() for n, p in named.items()}
        self.frozen = {n: p.detach() for n, p in model.named_parameters() if n not in named}
        self.frozen.update(dict(model.named_buffers()))
        self.batches = [(x, y)]
        self.weights = [1.0]
        self.num_samples = x.shape[0]
        self.device = x.device
        self.dtype = next(iter(self.theta.values())).dtype
        return self

    @contextlib.contextmanager
    def transformable(self) -> Iterator[None]:
        """Within the block, BatchNorm layers in training mode keep using batch statistics but stop
        updating their running statistics, an in-place mutation that ``torch.func`` transforms (jvp,
        vmap) refuse. The running statistics are updated by the plain forward passes outside."""
        changed = [m for m in self.model.modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
        for m in changed:
            m.track_running_stats = False
        try:
            yield
        finally:
            for m in changed:
                m.track_running_stats = True

    # --- structure ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.layout.dim

    def restrict(self, names: Iterable[str]) -> "Objective":
        """The same objective with only ``names`` as variables (the others held at their values)."""
        names = list(names)
        layout = self.layout.subset(names)
        other = copy.copy(self)
        other.layout = layout
        other.theta = {n: self.theta[n] for n in layout.names}
        other.frozen = {**self.frozen, **{n: t for n, t in self.theta.items() if n not in other.theta}}
        return other

    def point(self) -> torch.Tensor:
        """The current parameters as a flat vector."""
        return self.layout.flatten(self.theta)

    # --- evaluation --------------------------------------------------------------------------------
    def output(self, theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {**self.frozen, **theta}, (x,))

    def batch_loss(self, theta: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.output(theta, x), y)

    def batch_per_sample(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample(self.loss_name, output, y)

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of a per-rank partial sum over the ranks sharing the data (identity when not sharded)."""
        if self.sharded:
            distributed.all_reduce_sum(tensor)
        return tensor

    def reduce_scalar(self, value: float) -> float:
        """:meth:`all_reduce` for a Python number (returned unchanged when not sharded)."""
        if not self.sharded:
            return value
        return float(self.all_reduce(torch.tensor(value, dtype=torch.float64, device=self.device)))

    def _at(self, point: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self.theta if point is None else self.layout.unflatten(point)

    @torch.no_grad()
    def value(self, point: torch.Tensor | None = None) -> float:
        """L over all samples at the current parameters, or at the flat ``point``."""
        theta = self._at(point)
        return self.reduce_scalar(float(sum(w * self.batch_loss(theta, x, y)
                                            for (x, y), w in zip(self.batches, self.weights))))

    def value_and_gradient(self, point: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """(L, flat gradient of L) at the current parameters, or at the flat ``point``."""
        base = self._at(point)
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        value = 0.0
        for (x, y), w in zip(self.batches, self.weights):
            leaves = {n: t.detach().requires_grad_() for n, t in base.items()}
            loss = self.batch_loss(leaves, x, y)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
            total += w * self.layout.flatten(list(grads))
            value += w * float(loss.detach())
        return self.reduce_scalar(value), self.all_reduce(total)

    def gradient(self, point: torch.Tensor | None = None) -> torch.Tensor:
        """Flat gradient of L at the current parameters, or at the flat ``point``."""
        return self.value_and_gradient(point)[1]
